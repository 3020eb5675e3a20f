"""The benchmark knowledge base: written once with `write_knowledge_base`, then reused by every backend."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rayrag.bench.data import passage_texts, passage_vectors
from rayrag.bench.options import BenchOptions
from rayrag.errors import RayragError
from rayrag.kb.build import write_knowledge_base
from rayrag.kb.faiss_index import IndexParams
from rayrag.kb.manifest import Manifest

log = logging.getLogger(__name__)

ENCODER = "bench-random"
"""The encoder name recorded in the manifest of a benchmark knowledge base (its vectors are random)."""


def kb_name(opts: BenchOptions) -> str:
    """A directory name that changes whenever the index would: size, dim, type, clusters, seed."""
    return f"kb-{opts.index_size}x{opts.dim}-{opts.index_type}-c{opts.n_clusters()}-s{opts.seed}"


def _reusable(kb_dir: Path, n: int, dim: int, index_type: str) -> bool:
    try:
        m = Manifest.read(kb_dir)
    except RayragError:
        return False
    return m.encoder == ENCODER and m.n_passages == n and m.dim == dim and m.index_type == index_type


def ensure_kb(opts: BenchOptions) -> tuple[Path, bool]:
    """The benchmark knowledge base for `opts`: (its directory, whether it was built now)."""
    kb_dir = (opts.cache_dir or opts.out) / kb_name(opts)
    if _reusable(kb_dir, opts.index_size, opts.dim, opts.index_type):
        log.info("reusing the benchmark knowledge base %s", kb_dir)
        return kb_dir, False
    t0 = time.perf_counter()
    vectors = passage_vectors(opts.seed, opts.index_size, opts.n_clusters(), opts.dim)
    titles, texts = passage_texts(opts.seed, opts.index_size)
    write_knowledge_base(kb_dir, titles, texts, vectors, encoder=ENCODER, index_type=opts.index_type,
                         params=IndexParams(), passage_words=12, n_documents=opts.index_size, overwrite=True)
    log.info("built the benchmark knowledge base %s in %.1f s", kb_dir, time.perf_counter() - t0)
    return kb_dir, True


PROBE_PASSAGES = 64


def ensure_probe_kb(opts: BenchOptions) -> Path:
    """A flat knowledge base of a few passages of the benchmark's vector size: the baseline for actor memory."""
    kb_dir = (opts.cache_dir or opts.out) / f"kb-probe-{PROBE_PASSAGES}x{opts.dim}"
    if not _reusable(kb_dir, PROBE_PASSAGES, opts.dim, "flat"):
        vectors = passage_vectors(opts.seed, PROBE_PASSAGES, 1, opts.dim)
        titles, texts = passage_texts(opts.seed, PROBE_PASSAGES)
        write_knowledge_base(kb_dir, titles, texts, vectors, encoder=ENCODER, index_type="flat",
                             passage_words=12, n_documents=PROBE_PASSAGES, overwrite=True)
    return kb_dir
