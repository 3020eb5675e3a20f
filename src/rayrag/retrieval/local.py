"""`local` backend: the index lives in every process that retrieves (memory-mapped, so a node holds one copy).

The service holds nothing; each client opens the knowledge base itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rayrag.kb.manifest import Manifest
from rayrag.kb.store import KnowledgeBase, Passages
from rayrag.retrieval import search as _search
from rayrag.retrieval.base import Retrieved
from rayrag.retrieval.options import RetrievalOptions


@dataclass
class LocalSpec:
    """Where the knowledge base is and how to search it."""

    kb: str
    settings: str = "fast"
    threads: int = 0
    """FAISS threads of the searching thread (0: leave FAISS's count)."""
    backend: str = "local"

    def connect(self) -> LocalClient:
        """A client over this knowledge base: `LocalSpec(kb).connect()` is the way to search one in-process."""
        return LocalClient(self)

    def to_json(self) -> str:
        import json

        return json.dumps(asdict(self))


class LocalClient:
    """Searches a knowledge base opened in this process (FAISS index memory-mapped)."""

    retries = 0

    def __init__(self, spec: LocalSpec):
        self.kb = KnowledgeBase(spec.kb)
        self.settings = _search.settings_named(spec.settings, spec.threads or None)
        self.dim = self.kb.dim
        self.n_passages = len(self.kb)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _search.search(self.kb, queries, k, self.settings)

    def retrieve(self, queries: np.ndarray, k: int) -> Retrieved:
        return _search.retrieve(self.kb, queries, k, self.settings)

    def passages(self, ids: np.ndarray) -> Passages:
        return self.kb.passages(ids)

    def check_k(self, k: int, flag: str = "--n_docs") -> None:
        self.kb.check_k(k, flag)

    def close(self) -> None:
        pass


class LocalService:
    """Nothing outlives a process; opening checks that the knowledge base is one."""

    def __init__(self, opts: RetrievalOptions):
        Manifest.read(Path(opts.kb))
        self.spec = LocalSpec(kb=str(Path(opts.kb).resolve()), settings=opts.settings or "fast")

    def close(self) -> None:
        pass


def open_service(opts: RetrievalOptions) -> LocalService:
    return LocalService(opts)
