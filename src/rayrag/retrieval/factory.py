"""Make a retrieval backend by name: `local`, `pytorch` or `ray`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rayrag.errors import RayragError
from rayrag.retrieval.base import RetrievalBackend

log = logging.getLogger(__name__)


def make_backend(name: str, kb_dir: str | Path, *, num_workers: int = 1, ray_address: str | None = None,
                 run_dir: Path | None = None, policy: str = "rayrag", config=None) -> RetrievalBackend:
    """The backend `name` over the knowledge base `kb_dir`, ready to search.

    `pytorch` and, in a process group of size > 1, `ray` are collectives: call this on every rank at
    the same point. `policy` and `config` (a `ray_pool.PoolConfig`) apply to `ray` only."""
    if name == "local":
        from rayrag.retrieval.local import LocalBackend

        return LocalBackend(kb_dir)
    if name == "pytorch":
        from rayrag.retrieval.pytorch import TorchDistributedBackend

        return TorchDistributedBackend(kb_dir)
    if name == "ray":
        return make_ray_backend(kb_dir, num_workers, ray_address=ray_address, policy=policy, config=config)
    raise RayragError(f"--distributed_retriever {name!r}: not available; choose local, pytorch or ray")


def make_ray_backend(kb_dir: str | Path, num_workers: int, *, ray_address: str | None = None,
                     policy: str = "rayrag", config=None):
    """A `RayBackend` for this process.

    In a process group of size > 1, rank 0 creates the pool (and owns it: its `close` kills the
    actors) and broadcasts the pool's name; the other ranks find the actors by that name. Alone, a
    process joins the pool named in RAYRAG_RAY_POOL if set, or creates its own."""
    from rayrag.retrieval.ray_pool import POOL_ENV, PoolSpec, RayBackend
    from rayrag.retrieval.service import _world, share_pool_spec

    rank, world = _world()
    if world > 1:
        backend = None
        if rank == 0:
            backend = RayBackend.start(kb_dir, num_workers, ray_address=ray_address, policy=policy, config=config)
        spec = share_pool_spec(backend.pool.spec if backend is not None else None)
        if backend is not None:
            return backend
        _check_kb(spec, kb_dir)
        return RayBackend.attach(spec, rank=rank, config=config)
    if os.environ.get(POOL_ENV):
        spec = PoolSpec.from_json(os.environ[POOL_ENV])
        _check_kb(spec, kb_dir)
        return RayBackend.attach(spec, rank=0, config=config)
    return RayBackend.start(kb_dir, num_workers, ray_address=ray_address, policy=policy, config=config)


def _check_kb(spec, kb_dir: str | Path) -> None:
    if Path(spec.kb).resolve() != Path(kb_dir).resolve():
        raise RayragError(
            f"ray pool {spec.name} serves {spec.kb}, but this process retrieves from {kb_dir}; every rank "
            "must use the same --kb (unset RAYRAG_RAY_POOL if it is left over from another run)")
