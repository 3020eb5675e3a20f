"""The floor: the fastest in-process search of one step's queries this machine allows, and the bounds under it.

For each worker count W, in a fresh process whose OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE
is set before FAISS loads, so idle threads do not spin on the cores the search needs):

- `search_s`: all W x B queries of one step searched with the FAISS index alone, under every FAISS
  thread count 1..cores with the BLAS threshold at 1 (at the largest W also at FAISS's default); the
  best setting's median over the repeats (each trial records its minimum too). This is the floor.
- `retrieve_s`: rayrag's full retrieval call (search, exact re-ranking, passage vectors and texts) for
  the same queries with the best setting.
- `cadence_s`: the best setting's search again, each repeat after `step_time` seconds idle, as a training
  step calls it. Not a bound the report checks rows against, an explanation: on these machines a search
  that follows an idle gap is slower than one that follows another search (measured in one quiet process
  over 200k x 768: 0.145-0.164 s after 0.3 s idle, 0.112-0.126 s back to back), and every backend's
  calls follow a step's compute.
- `gemm_bound_s`: the N·d·W·B·2 flops of the exact scores at the machine's float32 GEMM rate (the best
  of repeated numpy products of a fixed 1024 x 768 x 8192 size, near the BLAS's peak);
  `stream_s`: one read of the index's bytes from RAM; `bound_s` = the larger. No exact search can beat
  them (flat indexes only; None for hnsw and ivfpq, which read a fraction of the vectors).

The report marks a floor invalid when a backend's critical path beats its `search_s` (`report.add_floor`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

import numpy as np

from rayrag.bench import data
from rayrag.kb.manifest import INDEX_FILE

log = logging.getLogger(__name__)

GEMM_SHAPE = (1024, 768, 8192)
"""(m, k, n) of the product timed for the machine's GEMM rate: large enough for the BLAS's peak, about 0.2 s."""
OMP_WAIT_POLICY = "PASSIVE"
"""The OpenMP wait policy of the floor's process."""


def _seconds(fn, repeats: int, idle_s: float = 0.0) -> list[float]:
    fn()  # untimed: maps pages, warms caches
    times = []
    for _ in range(repeats):
        time.sleep(idle_s)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _min_seconds(fn, repeats: int) -> float:
    return min(_seconds(fn, repeats))


def stream_seconds(kb_dir: Path, index_type: str, repeats: int) -> float:
    """Fastest of a few full reads of the index's bytes held in RAM (a sum; for flat, also a BLAS gemv)."""
    from rayrag.kb.store import KnowledgeBase

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


def gemm_rate(repeats: int, shape: tuple[int, int, int] = GEMM_SHAPE) -> dict:
    """This machine's float32 GEMM rate: the fastest of `repeats` numpy products (m, k) @ (k, n), all cores.

    Returns {"m", "k", "n", "flops" (2·m·k·n), "seconds" (the fastest), "flops_per_s", "repeats"}."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)
    best = _min_seconds(lambda: np.matmul(a, b, out=out), max(repeats, 3))
    flops = 2 * m * k * n
    return {"m": m, "k": k, "n": n, "flops": flops, "seconds": best, "flops_per_s": flops / best,
            "repeats": max(repeats, 3)}


def step_queries(seed: int, clusters: int, dim: int, n_queries: int, batch_size: int) -> np.ndarray:
    """One step's `n_queries` query vectors (n_queries, dim) float32: each rank's batch at the first step."""
    centres = data.centres(seed, clusters, dim)
    return np.concatenate([data.queries(seed, r, 0, batch_size, centres)
                           for r in range(-(-n_queries // batch_size))])[:n_queries]


def _search_trials(kb, q: np.ndarray, k: int, repeats: int, thresholds: list[int]) -> list[dict]:
    from rayrag.retrieval.search import TIE_MARGIN, SearchSettings

    kk = min(len(kb), k + TIE_MARGIN)
    trials = []
    for threads in range(1, (os.cpu_count() or 1) + 1):
        for threshold in thresholds:
            with SearchSettings(blas_threshold=threshold, threads=threads).applied():
                times = _seconds(lambda: kb.index.search(q, kk), repeats)
            trials.append({"threads": threads, "blas_threshold": threshold,
                           "search_s": statistics.median(times), "min_s": min(times)})
            log.info("floor, %d queries: %d threads, BLAS threshold %d: median %.4f s, min %.4f s", len(q),
                     threads, threshold, statistics.median(times), min(times))
    return trials


def measure_floors(kb_dir: Path, *, workers: list[int], batch_size: int, k: int, seed: int, clusters: int,
                   repeats: int, index_type: str, step_time: float = 0.0) -> dict[int, dict]:
    """The floor at each worker count in `workers`, measured in this process (see the module doc).

    Returns {W: {"workers", "queries", "search_s", "min_s", "settings", "retrieve_s", "cadence_s", "gemm_flops",
    "gemm_bound_s", "stream_s", "bound_s", "trials", and what all share: "gemm", "index_bytes",
    "n_passages", "dim", "index_type", "exact", "omp_wait_policy", "faiss_default_blas_threshold"}}."""
    from rayrag.kb.store import KnowledgeBase
    from rayrag.retrieval import search as search_mod

    kb = KnowledgeBase(kb_dir, verify_checksums=False)
    exact = index_type == "flat"
    gemm = gemm_rate(repeats)
    stream_s = stream_seconds(kb_dir, index_type, repeats)
    default = search_mod.FAISS_DEFAULT_BLAS_THRESHOLD
    shared = {"gemm": gemm, "index_bytes": (kb_dir / INDEX_FILE).stat().st_size, "n_passages": len(kb),
              "dim": kb.dim, "index_type": index_type, "exact": exact,
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "faiss_default_blas_threshold": default}
    floors = {}
    for w in sorted(workers):
        q = step_queries(seed, clusters, kb.dim, w * batch_size, batch_size)
        # FAISS's default threshold (the per-query path) is never the best for a step's few queries: timed at
        # the largest W only, to show what it costs.
        thresholds = sorted({default, 1}, reverse=True) if w == max(workers) else [1]
        trials = _search_trials(kb, q, k, repeats, thresholds)
        best = min(trials, key=lambda t: t["search_s"])
        settings = search_mod.SearchSettings(blas_threshold=best["blas_threshold"], threads=best["threads"])
        retrieve_s = statistics.median(_seconds(lambda: search_mod.retrieve(kb, q, k, settings), repeats))
        with settings.applied():
            cadence_s = statistics.median(_seconds(lambda: kb.index.search(q, min(len(kb), k + search_mod.TIE_MARGIN)),
                                                   repeats, idle_s=step_time))
        flops = 2 * len(kb) * kb.dim * len(q)
        gemm_bound_s = flops / gemm["flops_per_s"] if exact else None
        floors[w] = {**shared, "workers": w, "queries": len(q), "search_s": best["search_s"], "min_s": best["min_s"],
                     "settings": {"threads": best["threads"], "blas_threshold": best["blas_threshold"]},
                     "retrieve_s": retrieve_s, "cadence_s": cadence_s, "gemm_flops": flops, "gemm_bound_s": gemm_bound_s,
                     "stream_s": stream_s, "bound_s": max(gemm_bound_s, stream_s) if exact else None,
                     "trials": trials}
    return floors


def measure_floors_passive(kb_dir: Path, **kwargs) -> dict[int, dict]:
    """`measure_floors` in a fresh process with OMP_WAIT_POLICY=PASSIVE (OpenMP reads it once, as FAISS loads,
    so it cannot be set in a process that has loaded FAISS); this process's environment is left as it was."""
    before = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY  # inherited by the process started below
    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            return pool.submit(measure_floors, kb_dir, **kwargs).result()
    finally:
        if before is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
        else:
            os.environ["OMP_WAIT_POLICY"] = before
