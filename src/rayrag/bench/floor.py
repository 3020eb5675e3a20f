"""The floor: the fastest in-process search of one step's queries this machine allows, and the memory read time.

`search_s`: all W x B queries of one step (largest W) searched in this process with the
FAISS index alone, under every FAISS thread count and both BLAS thresholds (FAISS's default
and 1); the best setting's median over the repeats is the floor (each trial records its
minimum too). `retrieve_s`: rayrag's full retrieval call (search, exact re-ranking, passage
vectors and texts) for the same queries with the best setting. `stream_s`: the time to read the index's bytes
once from RAM, which no exact search can beat.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np

from rayrag.bench import data
from rayrag.kb.manifest import INDEX_FILE
from rayrag.kb.store import KnowledgeBase
from rayrag.retrieval import search as search_mod
from rayrag.retrieval.search import FAISS_DEFAULT_BLAS_THRESHOLD, TIE_MARGIN, SearchSettings

log = logging.getLogger(__name__)


def _seconds(fn, repeats: int) -> list[float]:
    fn()  # untimed: maps pages, warms caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _min_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def stream_seconds(kb_dir: Path, index_type: str, repeats: int) -> float:
    """Fastest of a few full reads of the index's bytes held in RAM (a sum; for flat, also a BLAS gemv)."""
    raw = np.fromfile(kb_dir / INDEX_FILE, dtype=np.uint8)
    words = raw[: len(raw) // 8 * 8].view(np.int64)
    best = _min_seconds(lambda: np.add.reduce(words), repeats)
    if index_type == "flat":
        kb = KnowledgeBase(kb_dir, verify_checksums=False, load_index=False)
        n, d = len(kb), kb.dim
        header = len(raw) - n * d * 4  # a flat index file is a small header then the vectors
        vecs = raw[header:header + n * d * 4].view(np.float32).reshape(n, d)
        ones = np.ones(d, dtype=np.float32)
        best = min(best, _min_seconds(lambda: vecs @ ones, repeats), _min_seconds(lambda: vecs.sum(), repeats))
    return best


def measure_floor(kb_dir: Path, *, n_queries: int, batch_size: int, k: int, seed: int, clusters: int,
                  repeats: int, index_type: str) -> dict:
    """Time one step's `n_queries` queries in this process under each setting; return the floor (see module doc)."""
    kb = KnowledgeBase(kb_dir, verify_checksums=False)
    centres = data.centres(seed, clusters, kb.dim)
    q = np.concatenate([data.queries(seed, r, 0, batch_size, centres)
                        for r in range(-(-n_queries // batch_size))])[:n_queries]
    kk = min(len(kb), k + TIE_MARGIN)
    trials = []
    for threads in range(1, (os.cpu_count() or 1) + 1):
        for threshold in sorted({FAISS_DEFAULT_BLAS_THRESHOLD, 1}, reverse=True):
            with SearchSettings(blas_threshold=threshold, threads=threads).applied():
                times = _seconds(lambda: kb.index.search(q, kk), repeats)
            trials.append({"threads": threads, "blas_threshold": threshold,
                           "search_s": statistics.median(times), "min_s": min(times)})
            log.info("floor: %d threads, BLAS threshold %d: median %.4f s, min %.4f s", threads, threshold,
                     statistics.median(times), min(times))
    best = min(trials, key=lambda t: t["search_s"])
    settings = SearchSettings(blas_threshold=best["blas_threshold"], threads=best["threads"])
    retrieve_s = statistics.median(_seconds(lambda: search_mod.retrieve(kb, q, k, settings), repeats))
    return {"search_s": best["search_s"], "settings": {"threads": best["threads"],
                                                         "blas_threshold": best["blas_threshold"]},
            "retrieve_s": retrieve_s, "stream_s": stream_seconds(kb_dir, index_type, repeats),
            "queries": n_queries, "index_bytes": (kb_dir / INDEX_FILE).stat().st_size,
            "faiss_default_blas_threshold": FAISS_DEFAULT_BLAS_THRESHOLD, "trials": trials}
