"""The retrieval seam: a *service* that a job's driver opens once, and a *client* in every process that retrieves.

    service = open_service(RetrievalOptions(...))   # the driver: `rayrag train`, a benchmark, later tune/serve
    spec = service.spec                             # small, serialisable (JSON): travels to every process
    client = spec.connect()                         # each rank / worker / trial: search, retrieve, close
    ...
    service.close()                                 # the driver, after every client has closed

A client never creates or kills what the service owns (the actor pool of `ray`). The client's calls:

    search(queries (B, d) float32, k) -> (scores (B, k) float32, ids (B, k) int64)
    retrieve(queries, k) -> Retrieved: the full call of a training step (ids, vectors, texts)
    passages(ids (B, k) int64) -> Passages: vectors, titles and texts of given passages
    switch(generation, kb): from the next call on, the knowledge base re-embedded as generation `generation`
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

    def rows(self, start: int, stop: int) -> Retrieved:
        """Queries start..stop-1 of this answer."""
        return Retrieved(self.scores[start:stop], self.ids[start:stop], self.vectors[start:stop],
                         self.titles[start:stop], self.texts[start:stop])


@runtime_checkable
class RetrievalClient(Protocol):
    """One process's way to the index. `retries`: calls re-sent after a failure (0 where nothing retries);
    `generation`: the index generation calls retrieve from (0 until the first `switch`)."""

    dim: int
    n_passages: int
    retries: int
    generation: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k: scores (B, k) float32 and ids (B, k) int64 for queries (B, d) float32."""
        ...

    def retrieve(self, queries: np.ndarray, k: int) -> Retrieved:
        """Top-k passages with ids, vectors (B, k, d) float32, titles and texts."""
        ...

    def passages(self, ids: np.ndarray) -> Passages:
        """Vectors (B, k, d) float32, titles and texts [B][k] of the passages `ids` (B, k) int64."""
        ...

    def check_k(self, k: int, flag: str = "--n_docs") -> None:
        """Raise `RayragError` naming `flag` unless 1 <= k <= n_passages."""
        ...

    def switch(self, generation: int, kb: str) -> None:
        """From the next call on, retrieve from index generation `generation`: the rayrag knowledge base `kb`, the same
        passages with the vectors and index of a re-embedding (`rayrag.reindex`). The training loop switches every
        rank at the same step; the previous generation stays open until the next switch (a call re-sent late may
        still name it), older ones are released."""
        ...

    def close(self) -> None:
        """Release what this client holds (process group, connection); never what the service owns."""
        ...


@runtime_checkable
class ClientSpec(Protocol):
    """What a process needs to make its client; `to_json()` is what travels between processes."""

    backend: str
    kb: str
    """The knowledge base: a rayrag directory, or with `index_path` a Hugging Face RAG passages directory."""
    index_path: str | None
    """The Hugging Face RAG layout's FAISS file; None for a rayrag directory (kb/layout.py)."""

    def connect(self, rank: int | None = None) -> RetrievalClient:
        """This process's client. `rank`: the process's index among the job's clients, where the job has no
        process group to tell it (each Serve replica's), for backends that spread their clients by it (`ray` pins
        one actor per rank); default the process group's rank. For `pytorch` a collective: call it on every rank
        at the same point (its rank is always the group's)."""
        ...

    def to_json(self) -> str:
        ...


@runtime_checkable
class RetrievalService(Protocol):
    """What outlives one process: opened once by a job's driver, closed by it after its clients."""

    spec: ClientSpec

    def pids(self) -> list[int]:
        """Process ids of what the service runs besides the job's own processes (the `ray` pool's actors; [] for
        backends that run inside the job's processes)."""
        ...

    def stats(self) -> list[dict]:
        """Counters of those processes (calls, seconds searching and waiting), one dict each; [] where none."""
        ...

    def close(self) -> None:
        ...
