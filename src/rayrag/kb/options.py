"""Options of `rayrag index`: which documents, how they are split and embedded, and the FAISS index; or which
Hugging Face RAG knowledge base to convert."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rayrag.cluster.args import ClusterArgs
from rayrag.errors import RayragError
from rayrag.kb.faiss_index import INDEX_TYPES, IndexParams, IndexType


@dataclass
class IndexOptions:
    """Options of `rayrag index`."""

    out: Path
    """Knowledge base directory to write."""
    docs: list[Path] = field(default_factory=list)
    """Document files (.jsonl, .tsv, .csv, .parquet) with title and text: `--docs a.jsonl b.tsv`."""
    passages_path: Path | None = None
    """Instead of --docs: convert a Hugging Face RAG knowledge base without re-embedding: its passages directory
    (title, text, embeddings; `dataset.save_to_disk`), with --index_path."""
    index_path: Path | None = None
    """With --passages_path: its FAISS index file (`dataset.get_index("embeddings").save`)."""
    encoder: str | None = None
    """Context encoder: hub name, local path, `minilm` (packaged; the default) or `tiny` (random, for tests; saved
    inside the knowledge base). With --passages_path: the encoder that made the stored vectors, recorded in the
    manifest (default: none recorded)."""
    pooling: Literal["auto", "cls", "mean"] = "auto"
    """How the encoder's token vectors become one passage vector: `mean` (the L2-normalised mean of the tokens, as
    sentence-transformers models such as the packaged MiniLM were trained; it retrieves far better with them: recall@5
    0.721 against 0.513 for `cls` on the real-text task's 1,200 val+test questions, scripts/realtext.py), `cls` (the
    first token, as DPR), or `auto`: what the encoder's own files say (a sentence-transformers pooling module), else
    `cls`. Recorded in the manifest; `init-model` gives the question encoder the same. With --passages_path: how the
    stored vectors were pooled (`auto` is `cls`: the Hugging Face example's script embeds with DPR's first token,
    whatever the encoder)."""
    passage_words: int = 100
    """Words per passage."""
    index_type: IndexType | None = None
    """FAISS index type: flat (the default) | hnsw | ivfpq. With --passages_path: unset keeps its index as it is,
    a type builds a new index of that type from the stored vectors."""
    index: IndexParams = field(default_factory=IndexParams)
    """Parameters of the hnsw and ivfpq index types (`--index.hnsw_m 32`; ignored by flat)."""
    batch_size: int = 64
    """Passages per encoder batch."""
    max_length: int = 256
    """Maximum passage length in tokens."""
    overwrite: bool = False
    """Replace --out if it exists."""
    ray: bool = False
    """Embed the passages with a Ray Data pipeline: a pool of --num_workers encoder actors on the Ray cluster
    (--ray_address), vectors equal to the single-process build's; the index and the knowledge base are then written as
    without it. Finished shards are kept beside --out (`.NAME.embedding/`) until the knowledge base is written, so a
    rerun of an interrupted build embeds only what is missing."""
    cluster: ClusterArgs = field(default_factory=ClusterArgs)
    """With --ray: the Ray cluster (--ray_address), the encoder actors (--num_workers, default 1), the CPUs each asks
    for (--cpus_per_worker, default 1, also its thread count) and --use_gpu (one GPU each)."""

    @property
    def converts(self) -> bool:
        """Whether this converts a Hugging Face RAG knowledge base (--passages_path/--index_path)."""
        return self.passages_path is not None or self.index_path is not None

    def validate(self) -> None:
        """Check every flag; raise `RayragError` naming the flag. Changes nothing."""
        if self.docs and self.converts:
            raise RayragError("--docs and --passages_path/--index_path: give one, documents to embed or a Hugging "
                              "Face RAG knowledge base to convert")
        if not self.docs and not self.converts:
            raise RayragError("--docs: name at least one document file, e.g. --docs docs.jsonl (or convert a "
                              "Hugging Face RAG knowledge base with --passages_path P --index_path I)")
        if self.converts and (self.passages_path is None or self.index_path is None):
            given, missing = (("--passages_path", "--index_path") if self.index_path is None
                              else ("--index_path", "--passages_path"))
            raise RayragError(f"{given}: give {missing} too; a Hugging Face RAG knowledge base is a passages "
                              "directory and the FAISS file saved beside it")
        if self.index_type is not None and self.index_type not in INDEX_TYPES:
            raise RayragError(f"--index_type {self.index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
        self._validate_ray()
        p = self.index
        least = {"--passage_words": (self.passage_words, 1), "--batch_size": (self.batch_size, 1),
                 "--max_length": (self.max_length, 1), "--index.hnsw_m": (p.hnsw_m, 2),
                 "--index.hnsw_ef_construction": (p.hnsw_ef_construction, 1),
                 "--index.hnsw_ef_search": (p.hnsw_ef_search, 1), "--index.ivf_nlist": (p.ivf_nlist, 0),
                 "--index.pq_m": (p.pq_m, 0), "--index.pq_nbits": (p.pq_nbits, 1),
                 "--index.ivf_nprobe": (p.ivf_nprobe, 1)}
        for flag, (value, low) in least.items():
            if value < low:
                raise RayragError(f"{flag} {value}: must be at least {low}")

    def _validate_ray(self) -> None:
        """The flags of `--ray`: refused without it, range-checked with it."""
        given = self.cluster.given + (["--cluster.address"] if self.cluster.address is not None else [])
        if not self.ray:
            if given:
                raise RayragError(f"{given[0]} applies to --ray (embedding by a pool of Ray actors); add --ray or drop "
                                  f"{given[0]}")
            return
        if self.converts:
            raise RayragError("--ray embeds documents (--docs); converting a knowledge base (--passages_path) embeds "
                              "nothing: drop --ray")
        self.cluster.validate()

    def resolved(self) -> IndexOptions:
        """A new `IndexOptions`; building from --docs fills in the defaults --encoder minilm and --index_type flat
        (converting keeps them unset: no encoder recorded, the source's index kept), and --ray --num_workers 1
        --cpus_per_worker 1."""
        defaults = {} if self.converts else {"encoder": self.encoder or "minilm",
                                             "index_type": self.index_type or "flat"}
        cluster = dataclasses.replace(self.cluster)
        if self.ray:
            cluster.workers, cluster.cpus_per_worker = cluster.workers or 1, cluster.cpus_per_worker or 1.0
        return dataclasses.replace(self, docs=list(self.docs), index=dataclasses.replace(self.index), cluster=cluster,
                                   **defaults)
