"""Turn a Hugging Face RAG knowledge base (passages directory + FAISS file) into a rayrag one, without re-embedding.

    rayrag index --passages_path OUT/my_knowledge_dataset --index_path OUT/my_knowledge_dataset_hnsw_index.faiss \\
        --out kb/

The source is opened and checked as `KnowledgeBase` opens it (kb/reference.py) and never written to.
The new directory, written atomically (`rayrag.atomic.atomic_dir`), holds:
- passages/: title, text and the stored embeddings as fixed-size float32 vectors (Arrow to Arrow, no
  model runs and no copy of the table in memory);
- index.faiss: with `index_type` None, the source's own index file, copied byte for byte (its
  parameters, e.g. HNSW's efSearch, recorded in the manifest); it must score by inner product. With
  `index_type` given, a new index of that type built from the stored vectors;
- manifest.json: the encoder named by the caller (the source records none), sizes and checksums.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from rayrag.errors import RayragError
from rayrag.atomic import atomic_dir
from rayrag.kb import faiss_index
from rayrag.kb.build import BuildReport, passage_features
from rayrag.kb.faiss_index import IndexParams
from rayrag.kb.manifest import INDEX_FILE, PASSAGES_DIR, Manifest, describe_files
from rayrag.kb.store import KnowledgeBase

log = logging.getLogger(__name__)


def _passages(kb: KnowledgeBase):
    """The source's title, text and embeddings as a `datasets.Dataset` with rayrag's features, over the source's
    memory-mapped Arrow buffers (zero-copy where the types already agree)."""
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo
    from datasets.table import InMemoryTable

    dim = kb.dim
    emb = kb.table.column("embeddings")
    fixed = pa.list_(pa.float32(), dim)
    if emb.type != fixed:  # the Hugging Face script stores variable-length lists
        emb = pa.chunked_array([pa.FixedSizeListArray.from_arrays(c.flatten(), dim) for c in emb.chunks], type=fixed)
    table = pa.table({"title": kb.table.column("title").cast(pa.string()),
                      "text": kb.table.column("text").cast(pa.string()), "embeddings": emb})
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=passage_features(dim)))


def convert(passages_path: Path, index_path: Path, out: Path, *, index_type: str | None = None,
            params: IndexParams | None = None, encoder: str | None = None, passage_words: int = 100,
            overwrite: bool = False, pooling: str = "cls") -> BuildReport:
    """Write the Hugging Face RAG knowledge base (`passages_path`, `index_path`) as a rayrag knowledge base at `out`.
    `index_type` None keeps the source's index; flat | hnsw | ivfpq builds one from the stored vectors (`params`).
    `encoder`: the context encoder that made the vectors, recorded in the manifest ("" if unknown); `pooling`: how
    they were pooled (the example's DPR encoders: `cls`)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise RayragError(f"{out}: already exists; pass --overwrite to replace it or choose another --out")
    seconds = {}
    t0 = time.perf_counter()
    # Keeping the index: open it too, so that its rows, size and metric are checked against the passages.
    source = KnowledgeBase(passages_path, index_path=index_path, load_index=index_type is None)
    seconds["check"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        _passages(source).save_to_disk(str(tmp / PASSAGES_DIR))
        if index_type is None:
            shutil.copyfile(index_path, tmp / INDEX_FILE)
            kind, used = faiss_index.describe(source.index)
        else:
            vectors = source.vectors(np.arange(len(source)))
            index, used = faiss_index.build_index(vectors, index_type, params or IndexParams())
            faiss_index.save_index(index, tmp / INDEX_FILE)
            kind = index_type
        manifest = Manifest(encoder=encoder or "", dim=source.dim, n_passages=len(source), index_type=kind,
                            index_params=used, passage_words=passage_words,
                            pooling=pooling)
        manifest.files = describe_files(tmp)
        manifest.write(tmp)
    seconds["write"] = time.perf_counter() - t0
    log.info("converted %s (%d passages, %d-d) to %s: %s index (%s) in %.1f s", source.where, len(source), source.dim,
             out, kind, "kept" if index_type is None else "built from the stored vectors", sum(seconds.values()))
    return BuildReport(documents=0, passages=len(source), skipped=[], dim=source.dim, index_type=kind,
                       seconds=seconds, pooling=pooling)
