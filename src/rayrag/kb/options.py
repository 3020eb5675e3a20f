"""Options of `rayrag index`: which documents, how they are split and embedded, and the FAISS index."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from rayrag.errors import RayragError
from rayrag.kb.faiss_index import INDEX_TYPES, IndexParams


@dataclass
class IndexOptions:
    """Options of `rayrag index`."""

    docs: list[Path]
    """Document files (.jsonl, .tsv, .csv, .parquet) with title and text: `--docs a.jsonl b.tsv`."""
    out: Path
    """Knowledge base directory to write."""
    encoder: str = "minilm"
    """Context encoder: hub name, local path, `minilm` (packaged) or `tiny` (random, for tests; saved inside the
    knowledge base)."""
    passage_words: int = 100
    """Words per passage."""
    index_type: str = "flat"
    """FAISS index type: flat | hnsw | ivfpq."""
    index: IndexParams = field(default_factory=IndexParams)
    """Parameters of the hnsw and ivfpq index types (`--index.hnsw_m 32`; ignored by flat)."""
    batch_size: int = 64
    """Passages per encoder batch."""
    max_length: int = 256
    """Maximum passage length in tokens."""
    overwrite: bool = False
    """Replace --out if it exists."""

    def validate(self) -> None:
        """Check every flag; raise `RayragError` naming the flag. Changes nothing."""
        if not self.docs:
            raise RayragError("--docs: name at least one document file, e.g. --docs docs.jsonl")
        if self.index_type not in INDEX_TYPES:
            raise RayragError(f"--index_type {self.index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
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

    def resolved(self) -> IndexOptions:
        """A new `IndexOptions`; nothing here has a default that depends on other flags."""
        return dataclasses.replace(self, docs=list(self.docs), index=dataclasses.replace(self.index))
