"""Build a knowledge base directory: documents -> passages -> vectors -> FAISS index, written atomically.

Everything is written into a temporary sibling directory and renamed into place at the end
(`rayrag.atomic.atomic_dir`), so a crash or a kill never leaves a half-built knowledge base under the
final name.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rayrag import encoders
from rayrag.data.documents import ReadReport, read_documents, split_passages
from rayrag.errors import RayragError
from rayrag.atomic import atomic_dir
from rayrag.kb import faiss_index
from rayrag.kb.faiss_index import IndexParams
from rayrag.kb.manifest import INDEX_FILE, PASSAGES_DIR, Manifest, describe_files

log = logging.getLogger(__name__)


@dataclass
class BuildReport:
    """What `build` did: counts, skipped rows and seconds per stage."""

    documents: int
    passages: int
    skipped: list[str]
    dim: int
    index_type: str
    seconds: dict = field(default_factory=dict)
    pooling: str = "cls"
    ray: object | None = None
    """With `ray` settings: the `rayrag.kb.ray_embed.RayEmbedReport` (passages embedded now and resumed, pipeline
    seconds)."""


def passage_features(dim: int):
    """The `datasets.Features` of a knowledge base's passages: title, text, embeddings (dim float32)."""
    from datasets import Features, Sequence as HFSequence, Value

    return Features({"title": Value("string"), "text": Value("string"),
                     "embeddings": HFSequence(Value("float32"), length=dim)})


def passages_dataset(titles: list[str], texts: list[str], vectors):
    """The passages as a `datasets.Dataset` over one Arrow table whose vector column wraps `vectors` (N, d)
    float32 without a copy. (`Dataset.from_dict` with a list of rows made Python floats of every component:
    over 22 GiB for 1M x 768, where the vectors are 3 GiB.)"""
    import numpy as np
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo
    from datasets.table import InMemoryTable

    features = passage_features(int(vectors.shape[1]))
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    table = pa.table({"title": pa.array(titles, pa.string()), "text": pa.array(texts, pa.string()),
                      "embeddings": pa.FixedSizeListArray.from_arrays(flat, int(vectors.shape[1]))})
    return Dataset(InMemoryTable(table.cast(features.arrow_schema)), info=DatasetInfo(features=features))


def write_knowledge_base(out: Path, titles: list[str], texts: list[str], vectors, *, encoder: str,
                         index_type: str = "flat", params: IndexParams | None = None,
                         passage_words: int = 100, n_documents: int = 0, overwrite: bool = False,
                         encoder_dir: Path | None = None, pooling: str = "cls") -> Manifest:
    """Write passages (N) with their vectors (N, d) float32 and an index as a knowledge base at `out`; `pooling` is
    how the vectors were pooled (`rayrag.encoders.pooling`), recorded in the manifest.

    `encoder_dir`, if given, is copied into the knowledge base as `encoder/` (the manifest then
    names the encoder `./encoder`): used for random `tiny` encoders that exist nowhere else."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        dim = int(vectors.shape[1])
        passages_dataset(titles, texts, vectors).save_to_disk(str(tmp / PASSAGES_DIR))
        index, used = faiss_index.build_index(vectors, index_type, params or IndexParams())
        faiss_index.save_index(index, tmp / INDEX_FILE)
        if encoder_dir is not None:
            shutil.copytree(encoder_dir, tmp / "encoder")
            encoder = "./encoder"
        manifest = Manifest(encoder=encoder, dim=dim, n_passages=len(texts), index_type=index_type,
                            index_params=used, passage_words=passage_words, n_documents=n_documents,
                            pooling=pooling)
        manifest.files = describe_files(tmp)
        manifest.write(tmp)
    return manifest


def build(docs: Sequence[Path], out: Path, *, encoder: str = encoders.MINILM, passage_words: int = 100,
          index_type: str = "flat", params: IndexParams | None = None, batch_size: int = 64,
          max_length: int = 256, overwrite: bool = False, progress: bool = True,
          pooling: str | None = None, ray=None) -> BuildReport:
    """Read `docs`, split into passages of `passage_words` words, embed with `encoder` pooled by `pooling` (None or
    `auto`: as the encoder was trained, `encoders.default_pooling`), index, write `out`. With `ray`
    (`rayrag.kb.ray_embed.RayEmbedSettings`) the passages are embedded by a pool of Ray actors (`embed_with_ray`),
    resuming from the shards an interrupted build left."""
    if passage_words < 1:
        raise RayragError(f"--passage-words {passage_words}: must be at least 1")
    if Path(out).exists() and not overwrite:
        raise RayragError(f"{out}: already exists; pass --overwrite to replace it or choose another --out")
    seconds = {}
    t0 = time.perf_counter()
    documents, report = read_documents(docs)
    titles, texts = [], []
    for doc in documents:
        for passage in split_passages(doc.text, passage_words):
            titles.append(doc.title)
            texts.append(passage)
    seconds["read"] = time.perf_counter() - t0
    log.info("read %d documents from %d files into %d passages (%d rows skipped)",
             report.documents, report.files, len(texts), len(report.skipped))

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        encoder_dir = None
        if encoder == "tiny":
            from rayrag.tiny import save_tiny_encoder, train_tokenizer

            encoder_dir = save_tiny_encoder(Path(scratch) / "encoder", train_tokenizer(titles + texts))
        model, tokenizer = encoders.load_context_encoder(str(encoder_dir or encoder))
        pooled = encoders.default_pooling(str(encoder_dir or encoder), pooling)
        log.info("embedding %d passages with %s, %s pooling", len(texts), encoder, pooled)
        ray_report = None
        if ray is None:
            vectors = encoders.embed_passages(model, tokenizer, titles, texts, batch_size=batch_size,
                                              max_length=max_length, progress=progress, pooling=pooled)
        else:
            from rayrag.kb import ray_embed

            vectors, ray_report = ray_embed.embed_with_ray(
                model, tokenizer, titles, texts, shards=ray_embed.shard_dir(out), settings=ray, batch_size=batch_size,
                max_length=max_length, pooling=pooled, progress=progress)
        seconds["embed"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_knowledge_base(Path(out), titles, texts, vectors, encoder=encoder, index_type=index_type,
                             params=params, passage_words=passage_words, n_documents=report.documents,
                             overwrite=overwrite, encoder_dir=encoder_dir, pooling=pooled)
    if ray is not None:
        ray_embed.remove_shards(out)
    seconds["index_and_write"] = time.perf_counter() - t0
    return BuildReport(documents=report.documents, passages=len(texts), skipped=report.skipped,
                       dim=int(vectors.shape[1]), index_type=index_type, seconds=seconds, pooling=pooled,
                       ray=ray_report)


__all__ = ["BuildReport", "ReadReport", "build", "passage_features", "write_knowledge_base"]
