"""`pytorch` backend: rank 0 of a separate gloo process group searches for every rank (the reference's architecture).

Each retrieval call is a collective over the group, so every rank must make the same number of
calls (DDP training steps and validation batches are in lockstep):

    all_gather  (B_r, k) of every rank          ranks may hold different batch sizes
    gather      queries padded to (B_max, d)    to rank 0
    rank 0      one `search.search` over all sum(B_r) queries, with the spec's settings
                (fast by default; `reference`: FAISS calls of 8 queries, FAISS defaults)
    scatter     (B_max, 2k) float64: ids and scores of each rank's rows

Only rank 0 opens the FAISS index. Every rank then reads the vectors, titles and texts of its
ids from its own memory-mapped Arrow passages, as the reference's workers read their passages:
that moves k ids instead of k * d floats through rank 0, and the look-ups run in parallel.
With world size 1 (no process group) it searches locally, without collectives.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import timedelta

import numpy as np

from rayrag.errors import RetrievalError
from rayrag.kb.layout import resolve
from rayrag.kb.store import KnowledgeBase, Passages
from rayrag.retrieval import search as _search
from rayrag.retrieval.base import Retrieved
from rayrag.retrieval.options import RetrievalOptions

log = logging.getLogger(__name__)


@dataclass
class TorchSpec:
    """The knowledge base, how rank 0 searches it, and the gloo group's timeout."""

    kb: str
    index_path: str | None = None
    """The Hugging Face layout's FAISS file (`kb` its passages directory); None for a rayrag directory."""
    settings: str = "fast"
    """How rank 0 searches: fast (one BLAS call for every rank's queries) or reference (the reference's
    retriever: FAISS calls of 8 queries, FAISS's defaults)."""
    timeout_s: float = 1800.0
    verified: bool = False
    """The service that made this spec verified the files' checksums; rank 0 then checks sizes only."""
    backend: str = "pytorch"

    def connect(self, rank: int | None = None) -> TorchDistributedClient:
        """This rank's client: a collective (it makes a gloo group) on every rank at the same point; the rank is the
        group's, whatever `rank` says."""
        return TorchDistributedClient(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class TorchService:
    """Nothing outlives a process: the group is made by the clients. Opening verifies the knowledge base once."""

    def __init__(self, opts: RetrievalOptions):
        kb = resolve(opts.kb, opts.index_path).verify()
        self.spec = TorchSpec(kb=kb.kb, index_path=kb.index_path, settings=opts.settings or "fast", verified=True)

    def pids(self) -> list[int]:
        """Processes of the service that hold the index: none (rank 0's client holds it)."""
        return []

    def stats(self) -> list[dict]:
        """Counters of the service's processes: none."""
        return []

    def close(self) -> None:
        pass


def open_service(opts: RetrievalOptions) -> TorchService:
    return TorchService(opts)


class TorchDistributedClient:
    """Retrieval served by rank 0 of a gloo group made over all ranks of the default process group."""

    retries = 0

    def __init__(self, spec: TorchSpec):
        import torch.distributed as dist

        self.settings = _search.settings_named(spec.settings)
        self.group = None
        self.closed = False
        self.rank, self.world = 0, 1
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self.group = dist.new_group(backend="gloo", timeout=timedelta(seconds=spec.timeout_s))
            self.rank, self.world = dist.get_rank(self.group), dist.get_world_size(self.group)
            self.server = dist.get_global_rank(self.group, 0)
        # Only rank 0 maps the index; checksums are checked once for everybody: by the service, or else by rank 0.
        self.kb = KnowledgeBase(spec.kb, index_path=spec.index_path, load_index=self.rank == 0,
                                verify_checksums=self.rank == 0 and not spec.verified)
        self.dim = self.kb.dim
        self.n_passages = len(self.kb)
        self.generation = 0
        log.info("pytorch retrieval: rank %d of %d%s", self.rank, self.world,
                 " serves the index" if self.rank == 0 else "")

    def passages(self, ids: np.ndarray) -> Passages:
        return self.kb.passages(ids)

    def switch(self, generation: int, kb: str) -> None:
        """Open generation `generation` (`kb`): rank 0 with its index, the others its passages (vectors, texts)."""
        self.kb = KnowledgeBase(kb, load_index=self.rank == 0, verify_checksums=False)
        self.generation = generation

    def check_k(self, k: int, flag: str = "--n_docs") -> None:
        self.kb.check_k(k, flag)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores (B, k) float32 and ids (B, k) int64 for this rank's queries (B, d) float32 (a collective)."""
        if self.closed:
            raise RetrievalError("pytorch retrieval: the backend is closed")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (B, {self.dim}) float32, got {queries.shape}")
        if self.group is None:
            return _search.search(self.kb, queries, k, self.settings)
        return self._exchange(queries, k)

    def retrieve(self, queries: np.ndarray, k: int) -> Retrieved:
        """Scores, ids, vectors (B, k, d), titles and texts for this rank's queries (a collective)."""
        scores, ids = self.search(queries, k)
        return Retrieved.of(scores, self.kb.passages(ids))

    def _exchange(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch
        import torch.distributed as dist

        mine = torch.tensor([len(queries), k], dtype=torch.int64)
        shapes = [torch.zeros(2, dtype=torch.int64) for _ in range(self.world)]
        dist.all_gather(shapes, mine, group=self.group)
        sizes = [int(s[0]) for s in shapes]
        ks = {int(s[1]) for s in shapes}
        if len(ks) != 1:  # every rank sees the same shapes, so every rank raises
            raise RetrievalError(f"pytorch retrieval: ranks asked for different k {sorted(ks)} in one call")
        b_max = max(sizes)
        if b_max == 0:
            return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
        padded = torch.zeros(b_max, self.dim, dtype=torch.float32)
        padded[:len(queries)] = torch.from_numpy(queries)
        gathered = [torch.empty_like(padded) for _ in range(self.world)] if self.rank == 0 else None
        dist.gather(padded, gathered, dst=self.server, group=self.group)
        out = torch.empty(b_max, 2 * k, dtype=torch.float64)
        pieces = None
        if self.rank == 0:
            allq = np.concatenate([g[:n].numpy() for g, n in zip(gathered, sizes)], axis=0)
            scores, ids = _search.search(self.kb, allq, k, self.settings)
            pieces, start = [], 0
            for n in sizes:  # ids (< 2**53) and float32 scores are exact in float64
                piece = torch.zeros(b_max, 2 * k, dtype=torch.float64)
                piece[:n, :k] = torch.from_numpy(ids[start:start + n].astype(np.float64))
                piece[:n, k:] = torch.from_numpy(scores[start:start + n].astype(np.float64))
                pieces.append(piece)
                start += n
        dist.scatter(out, pieces, src=self.server, group=self.group)
        mine_out = out[:len(queries)].numpy()
        return mine_out[:, k:].astype(np.float32), mine_out[:, :k].astype(np.int64)

    def close(self) -> None:
        """Drop this rank's handle on the group (the default group stays with Lightning)."""
        import torch.distributed as dist

        if self.group is not None and dist.is_initialized():
            try:
                dist.destroy_process_group(self.group)
            except (RuntimeError, ValueError) as e:
                log.debug("destroy_process_group: %s", e)
        self.group = None
        self.closed = True
