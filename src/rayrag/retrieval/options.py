"""Retrieval options: `RetrievalArgs`, the part a verb nests (`--retrieval.*`: which backend, how many actors, the
pool), and `RetrievalOptions`, what a job's driver opens a service with (those plus the knowledge base)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from rayrag.errors import RayragError
from rayrag.retrieval.ray.config import PoolConfig

Backend = Literal["local", "pytorch", "ray"]
BACKENDS: tuple[str, ...] = typing.get_args(Backend)


@dataclass
class RetrievalArgs:
    """Where retrieval is served from. The reference's --distributed_retriever and --num_retrieval_workers still
    work, as do --pool.* for --retrieval.pool.*."""

    OLD_SPELLINGS: ClassVar[dict[str, str]] = {
        "--distributed_retriever": "backend", "--num_retrieval_workers": "num_workers",
        "--retrieval_timeout_s": "pool.call_timeout_s", "--retrieval_max_restarts": "pool.max_restarts",
        **{f"--pool.{f.name}": f"pool.{f.name}" for f in dataclasses.fields(PoolConfig)}}
    """The flat flags of these fields (the reference's, and rayrag's earlier --pool.*), as cli/aliases.py applies
    them."""

    backend: Backend = "local"
    """local (the index mapped in each process) | pytorch (rank 0 serves every rank) | ray (a pool of Ray actors
    outside the training processes). Spelled --distributed_retriever in the reference."""
    num_workers: int = 1
    """ray: retrieval actors in the pool. Spelled --num_retrieval_workers in the reference."""
    pool: PoolConfig = field(default_factory=PoolConfig)
    """ray: how the pool's actors are made and called (--retrieval_timeout_s and --retrieval_max_restarts are
    --pool.call_timeout_s and --pool.max_restarts)."""

    def validate(self, prefix: str = "--retrieval.") -> None:
        """Refuse the ray backend's flags with another backend (compared with the defaults), then range-check them;
        `RayragError` names the flag."""
        if self.backend not in BACKENDS:
            raise RayragError(f"{prefix}backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.num_workers < 1:
            raise RayragError(f"{prefix}num_workers {self.num_workers}: must be at least 1")
        if self.backend != "ray":
            default = PoolConfig()
            changed = [f"{prefix}pool.{f.name}" for f in dataclasses.fields(PoolConfig)
                       if getattr(self.pool, f.name) != getattr(default, f.name)]
            if self.num_workers != 1:
                changed.insert(0, f"{prefix}num_workers")
            if changed:
                raise RayragError(f"{changed[0]} applies to {prefix}backend ray, not {self.backend}; drop it or "
                                  "choose ray")
        self.pool.validate(f"{prefix}pool.")

    def copy(self) -> RetrievalArgs:
        """A deep copy (the pool's settings are a dataclass of their own)."""
        return dataclasses.replace(self, pool=dataclasses.replace(self.pool, resources=dict(self.pool.resources)))


@dataclass
class RetrievalOptions:
    """What a job's driver opens a retrieval service with (`rayrag.retrieval.open_service`)."""

    kb: Path
    """Knowledge base: a rayrag directory, a directory holding a Hugging Face RAG knowledge base, or (with
    `index_path`) the Hugging Face layout's passages directory (kb/layout.py)."""
    backend: Backend = "local"
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

    @classmethod
    def of(cls, kb, args: RetrievalArgs, ray_address: str | None = None) -> RetrievalOptions:
        """The service request of a verb's `RetrievalArgs` over the knowledge base `kb` (a `KbLocation`)."""
        return cls(kb=Path(kb.kb), index_path=Path(kb.index_path) if kb.index_path else None, backend=args.backend,
                   num_workers=args.num_workers, ray_address=ray_address, pool=args.pool)
