"""The retrieval seam: what every backend (local, pytorch, ray) provides to the RAG retriever.

    search(queries (B, d) float32, k) -> (scores (B, k) float32, ids (B, k) int64)
    retrieve(queries, k) -> Retrieved: the full call of a training step (ids, vectors, texts)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from rayrag.kb.store import Passages


@dataclass
class Retrieved:
    """The answer to one retrieval call for B queries.

    scores (B, k) float32, ids (B, k) int64, vectors (B, k, d) float32, titles and texts [B][k].
    """

    scores: np.ndarray
    ids: np.ndarray
    vectors: np.ndarray
    titles: list[list[str]]
    texts: list[list[str]]

    @classmethod
    def of(cls, scores: np.ndarray, passages: Passages) -> Retrieved:
        return cls(scores, passages.ids, passages.vectors, passages.titles, passages.texts)


@runtime_checkable
class RetrievalBackend(Protocol):
    """Where the index lives and how a training process reaches it."""

    name: str
    dim: int
    n_passages: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k: scores (B, k) float32 and ids (B, k) int64 for queries (B, d) float32."""
        ...

    def retrieve(self, queries: np.ndarray, k: int) -> Retrieved:
        """Top-k passages with ids, vectors (B, k, d) float32, titles and texts."""
        ...

    def close(self) -> None:
        """Release what the backend holds (actors, process groups)."""
        ...
