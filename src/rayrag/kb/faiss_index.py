"""FAISS indexes for passage vectors: build (`flat`, `hnsw`, `ivfpq`), save, map from disk, search.

All indexes use inner product, the score DPR and RAG are trained with.
"""

from __future__ import annotations

import logging
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from rayrag.errors import RayragError

log = logging.getLogger(__name__)

IndexType = Literal["flat", "hnsw", "ivfpq"]
INDEX_TYPES: tuple[str, ...] = typing.get_args(IndexType)


@dataclass
class IndexParams:
    """Parameters of the approximate index types (ignored by `flat`)."""

    hnsw_m: int = 32
    """HNSW: neighbours per node."""
    hnsw_ef_construction: int = 80
    """HNSW: candidate list size while building."""
    hnsw_ef_search: int = 128
    """HNSW: candidate list size while searching."""
    ivf_nlist: int = 0
    """IVF-PQ: number of coarse cells; 0 picks about 4*sqrt(N)."""
    pq_m: int = 0
    """IVF-PQ: sub-quantizers per vector; 0 picks the largest divisor of the dimension <= dim/8."""
    pq_nbits: int = 8
    """IVF-PQ: bits per sub-quantizer code."""
    ivf_nprobe: int = 16
    """IVF-PQ: cells visited per query."""


def _pick_pq_m(dim: int) -> int:
    best = 1
    for m in range(1, dim // 8 + 1):
        if dim % m == 0:
            best = m
    return best


def build_index(vectors: np.ndarray, index_type: str, params: IndexParams) -> tuple[faiss.Index, dict]:
    """Build an index over `vectors` (N, d) float32; returns it and the parameters it used."""
    if index_type not in INDEX_TYPES:
        raise RayragError(f"--index_type {index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
    n, dim = vectors.shape
    used: dict = {}
    t0 = time.perf_counter()
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.hnsw_ef_construction
        index.add(vectors)
        used = {"hnsw_m": params.hnsw_m, "hnsw_ef_construction": params.hnsw_ef_construction,
                "hnsw_ef_search": params.hnsw_ef_search}
    else:
        nlist = params.ivf_nlist or max(1, min(n // 39, int(4 * np.sqrt(n))))
        pq_m = params.pq_m or _pick_pq_m(dim)
        if dim % pq_m:
            raise RayragError(f"--index.pq_m {pq_m}: must divide the vector size {dim}")
        # FAISS wants about 39 training points per centroid, for the coarse and the PQ codebooks.
        nbits = params.pq_nbits
        while nbits > 1 and n < 39 * (1 << nbits):
            nbits -= 1
        if n < 39 * nlist or nbits < 1:
            raise RayragError(
                f"ivfpq needs more passages: {n} passages for {nlist} cells; use --index_type flat "
                "or a smaller --index.ivf_nlist")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.add(vectors)
        used = {"ivf_nlist": nlist, "pq_m": pq_m, "pq_nbits": nbits, "ivf_nprobe": params.ivf_nprobe}
    log.info("built %s index over %d x %d vectors in %.1f s", index_type, n, dim, time.perf_counter() - t0)
    configure(index, used)
    return index, used


def configure(index: faiss.Index, params: dict) -> None:
    """Apply the search-time parameters recorded in a manifest."""
    if "hnsw_ef_search" in params and hasattr(index, "hnsw"):
        index.hnsw.efSearch = int(params["hnsw_ef_search"])
    if "ivf_nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["ivf_nprobe"])


def save_index(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def stored_vectors(index: faiss.Index) -> np.ndarray | None:
    """The raw vectors a flat or HNSW-flat index stores, as a zero-copy float32 (N, d) view of its memory
    (the mapped file, for a memory-mapped flat index); None for an index that keeps only codes (ivfpq).
    The view is valid while `index` lives."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexHNSW):
        index = faiss.downcast_index(index.storage)
    if not isinstance(index, faiss.IndexFlat) or index.ntotal == 0:
        return None
    return faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)


def load_index(path: Path, params: dict, mmap: bool = True, fix: str = "rebuild with `rayrag index`") -> faiss.Index:
    """Read an index file; with `mmap`, flat codes are mapped so processes on a node share the pages. Types that
    cannot be mapped are read whole. `fix`: what the error for an unreadable file tells the user to do."""
    flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0
    try:
        index = faiss.read_index(str(path), flags)
    except RuntimeError:
        if not mmap:
            raise RayragError(f"{path}: not a readable FAISS index; {fix}") from None
        try:  # some index types cannot be mapped: read them whole
            index = faiss.read_index(str(path))
        except RuntimeError:
            raise RayragError(f"{path}: not a readable FAISS index; {fix}") from None
        log.info("%s: this index type cannot be memory-mapped; read whole (one private copy per process)", path)
    configure(index, params)
    return index


def describe(index: faiss.Index) -> tuple[str, dict]:
    """(index type, parameters) of an index made elsewhere, in the terms of a manifest: `flat`, `hnsw` and `ivfpq`
    with the parameters `build_index` records; any other type by its FAISS class name."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw", {"hnsw_m": int(index.hnsw.nb_neighbors(1)),
                        "hnsw_ef_construction": int(index.hnsw.efConstruction),
                        "hnsw_ef_search": int(index.hnsw.efSearch)}
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq", {"ivf_nlist": int(index.nlist), "pq_m": int(index.pq.M), "pq_nbits": int(index.pq.nbits),
                         "ivf_nprobe": int(index.nprobe)}
    if isinstance(index, faiss.IndexFlat):
        return "flat", {}
    if isinstance(index, faiss.IndexIVF):
        return type(index).__name__, {"ivf_nprobe": int(index.nprobe)}
    return type(index).__name__, {}
