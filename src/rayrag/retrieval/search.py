"""The search every backend runs where the index lives: FAISS candidates, then one canonical order.

FAISS may order near-equal scores differently depending on batch size and code path (BLAS or
not), so backends that batch differently could disagree on ids. To make every backend return the
same ids for the same queries, FAISS is asked for a few extra candidates, the candidates are
scored again in float64 against the stored passage vectors, and sorted by (score desc, id asc).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import faiss
import numpy as np

from rayrag.errors import RayragError
from rayrag.kb.store import KnowledgeBase
from rayrag.retrieval.base import Retrieved

TIE_MARGIN = 4
"""Extra FAISS candidates fetched so that near-ties at the k-th place are resolved exactly."""


@dataclass(frozen=True)
class SearchSettings:
    """How a process searches its index. Applied around each search (`applied`), never left behind:
    a backend does not change process-wide FAISS state when it is made."""

    sub_batch: int = 0
    """Split queries into FAISS calls of this many rows (the reference's `retrieval_batch_size` = 8); 0 = one call."""
    blas_threshold: int | None = None
    """`faiss.cvar.distance_compute_blas_threshold` during the search; lower makes small batches use BLAS.
    None = FAISS default."""
    threads: int | None = None
    """FAISS OpenMP threads of the searching thread; None leaves its current count."""

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Run the body with these settings; the previous FAISS threshold and thread count come back after."""
        threshold, threads = faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()
        if self.blas_threshold is not None:
            faiss.cvar.distance_compute_blas_threshold = int(self.blas_threshold)
        if self.threads is not None:
            faiss.omp_set_num_threads(int(self.threads))
        try:
            yield
        finally:
            faiss.cvar.distance_compute_blas_threshold = threshold
            if self.threads is not None:
                faiss.omp_set_num_threads(threads)


FAISS_DEFAULT_BLAS_THRESHOLD = int(faiss.cvar.distance_compute_blas_threshold)
"""FAISS's own threshold, read at import (rayrag never leaves it changed)."""
FAST = SearchSettings(sub_batch=0, blas_threshold=1)
"""rayrag's own settings: one FAISS call per request, BLAS for any batch size."""
REFERENCE = SearchSettings(sub_batch=8, blas_threshold=FAISS_DEFAULT_BLAS_THRESHOLD)
"""The reference retriever's search path: sub-batches of 8 query vectors, FAISS defaults."""
SETTINGS = {"fast": FAST, "reference": REFERENCE}
"""Settings by the name a backend's spec carries."""


def settings_named(name: str, threads: int | None = None) -> SearchSettings:
    """The settings called `name` (fast | reference), with `threads` FAISS threads if given."""
    if name not in SETTINGS:
        raise RayragError(f"search settings {name!r}: choose one of {', '.join(SETTINGS)}")
    return replace(SETTINGS[name], threads=threads) if threads else SETTINGS[name]


def search(kb: KnowledgeBase, queries: np.ndarray, k: int,
           settings: SearchSettings = FAST) -> tuple[np.ndarray, np.ndarray]:
    """Top-k passages for `queries` (B, d) float32: scores (B, k) float32, ids (B, k) int64.

    Never returns -1: where an approximate index finds fewer than k hits, those rows are
    searched exactly over the stored vectors.
    """
    scores, ids, _ = nearest(kb, queries, k, settings, vectors=False)
    return scores, ids


def nearest(kb: KnowledgeBase, queries: np.ndarray, k: int, settings: SearchSettings = FAST,
            vectors: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`search`, and the top-k passages' vectors (B, k, d) float32 (None unless `vectors`): taken from the
    candidates' vectors the re-ranking read, so a retrieval call reads each stored vector once."""
    if kb.index is None:
        raise RuntimeError("knowledge base was opened without its index")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != kb.dim:
        raise ValueError(f"queries must be (B, {kb.dim}) float32, got {queries.shape}")
    kk = min(len(kb), k + TIE_MARGIN)
    step = settings.sub_batch or len(queries) or 1
    with settings.applied():
        parts = [kb.index.search(queries[i:i + step], kk)[1] for i in range(0, len(queries), step)]
    cand = np.concatenate(parts, axis=0) if parts else np.zeros((0, kk), dtype=np.int64)
    short = (cand < 0).sum(axis=1) > kk - k
    if short.any():
        cand[short] = kb.exact_search(queries[short], kk)[1]
    valid = cand >= 0
    safe = np.where(valid, cand, 0)
    cand_vectors = kb.vectors(safe)
    scores = np.einsum("bd,bkd->bk", queries.astype(np.float64), cand_vectors.astype(np.float64))
    scores = np.where(valid, scores, -np.inf)
    order = np.lexsort((safe, -scores), axis=1)[:, :k]
    top = np.take_along_axis(cand_vectors, order[:, :, None], 1) if vectors else None
    return (np.take_along_axis(scores, order, 1).astype(np.float32),
            np.take_along_axis(safe, order, 1).astype(np.int64), top)


def retrieve(kb: KnowledgeBase, queries: np.ndarray, k: int,
             settings: SearchSettings = FAST) -> Retrieved:
    """The full retrieval call of a training step: scores and passages (ids, vectors, texts)."""
    scores, ids, vectors = nearest(kb, queries, k, settings)
    titles, texts = kb.texts(ids)
    return Retrieved(scores, ids, vectors, titles, texts)
