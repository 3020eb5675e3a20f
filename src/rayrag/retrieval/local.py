"""`local` backend: the index lives in every process that retrieves (memory-mapped, so a node holds one copy).

The service holds nothing; each client opens the knowledge base itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rayrag.kb.layout import resolve
from rayrag.kb.store import KnowledgeBase, Passages
from rayrag.retrieval import search as _search
from rayrag.retrieval.base import Retrieved
from rayrag.retrieval.options import RetrievalOptions


@dataclass
class LocalSpec:
    """Where the knowledge base is and how to search it."""

    kb: str
    index_path: str | None = None
    """The Hugging Face layout's FAISS file (`kb` its passages directory); None for a rayrag directory."""
    settings: str = "fast"
    threads: int = 0
    """FAISS threads of the searching thread (0: this machine's cores divided among the job's processes on it,
    so that W ranks searching at once do not run W times as many threads as there are cores)."""
    verified: bool = False
    """The service that made this spec verified the files' checksums, so each client checks sizes only (W ranks
    do not hash the whole index W times)."""
    backend: str = "local"

    def connect(self, rank: int | None = None) -> LocalClient:
        """A client over this knowledge base: `LocalSpec(kb).connect()` is the way to search one in-process (every
        client maps the same files, so `rank` changes nothing)."""
        return LocalClient(self)

    def to_json(self) -> str:
        import json

        return json.dumps(asdict(self))


class LocalClient:
    """Searches a knowledge base opened in this process (FAISS index memory-mapped)."""

    retries = 0

    def __init__(self, spec: LocalSpec):
        from rayrag.distributed import cores, ranks_on_this_node

        self.kb = KnowledgeBase(spec.kb, index_path=spec.index_path, verify_checksums=not spec.verified)
        threads = spec.threads or max(1, cores() // ranks_on_this_node())
        self.settings = _search.settings_named(spec.settings, threads)
        self.dim = self.kb.dim
        self.n_passages = len(self.kb)
        self.generation = 0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _search.search(self.kb, queries, k, self.settings)

    def retrieve(self, queries: np.ndarray, k: int) -> Retrieved:
        return _search.retrieve(self.kb, queries, k, self.settings)

    def passages(self, ids: np.ndarray) -> Passages:
        return self.kb.passages(ids)

    def check_k(self, k: int, flag: str = "--n_docs") -> None:
        self.kb.check_k(k, flag)

    def switch(self, generation: int, kb: str) -> None:
        """Open generation `generation` (`kb`, written and verified by its re-index) in place of the current one."""
        self.kb = KnowledgeBase(kb, verify_checksums=False)
        self.generation = generation

    def close(self) -> None:
        pass


class LocalService:
    """Nothing outlives a process; opening verifies the knowledge base once, for every client."""

    def __init__(self, opts: RetrievalOptions):
        kb = resolve(opts.kb, opts.index_path).verify()
        self.spec = LocalSpec(kb=kb.kb, index_path=kb.index_path, settings=opts.settings or "fast", verified=True)

    def pids(self) -> list[int]:
        """Processes of the service that hold the index: none (the clients' own processes do)."""
        return []

    def stats(self) -> list[dict]:
        """Counters of the service's processes: none."""
        return []

    def close(self) -> None:
        pass


def open_service(opts: RetrievalOptions) -> LocalService:
    return LocalService(opts)
