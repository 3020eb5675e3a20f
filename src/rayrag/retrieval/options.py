"""`RetrievalOptions`: which backend serves retrieval for a job, over which knowledge base, and its knobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rayrag.retrieval.ray.config import PoolConfig

BACKENDS = ("local", "pytorch", "ray")


@dataclass
class RetrievalOptions:
    """What a job's driver opens a retrieval service with (`rayrag.retrieval.open_service`)."""

    kb: Path
    """Knowledge base: a rayrag directory, a directory holding a Hugging Face RAG knowledge base, or (with
    `index_path`) the Hugging Face layout's passages directory (kb/layout.py)."""
    backend: str = "local"
    """local (index in each process) | pytorch (rank 0 serves every rank) | ray (a pool of actors)."""
    num_workers: int = 1
    """ray: retrieval actors in the pool."""
    ray_address: str | None = None
    """ray: `auto`, HOST:PORT, ray://..., or None/`local` to start a private Ray instance."""
    policy: str = "rayrag"
    """ray: the pool's policy: rayrag (pinned, shared index, merged calls) or reference (the reference's pool)."""
    pool: PoolConfig = field(default_factory=PoolConfig)
    """ray: how actors are made and called."""
    settings: str | None = None
    """How the index is searched: fast | reference (None: the backend's default)."""
    index_path: Path | None = None
    """The Hugging Face layout's FAISS file, when `kb` is its passages directory; None otherwise."""
