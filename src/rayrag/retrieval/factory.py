"""Make a retrieval backend by name: `local`, `pytorch` or `ray`."""

from __future__ import annotations

from pathlib import Path

from rayrag.errors import RayragError
from rayrag.retrieval.base import RetrievalBackend


def make_backend(name: str, kb_dir: str | Path, *, num_workers: int = 1, ray_address: str | None = None,
                 run_dir: Path | None = None) -> RetrievalBackend:
    """The backend `name` over the knowledge base `kb_dir`, ready to search."""
    if name == "local":
        from rayrag.retrieval.local import LocalBackend

        return LocalBackend(kb_dir)
    raise RayragError(f"--distributed_retriever {name!r}: not available; choose local")
