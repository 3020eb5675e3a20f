"""Retrieval for a training job: one backend per training process, and what outlives the processes.

`rayrag train` uses a `RetrievalService` twice, in every training process:

    with service:          # before trainer.fit: in the first process only (global rank 0, before
        trainer.fit(...)   #   Lightning starts the other ranks), the ray backend starts or joins
                           #   Ray, creates the run's actor pool once and exports its name in
                           #   RAYRAG_RAY_POOL, which the other ranks inherit; after fit it kills
                           #   the pool and stops Ray if rayrag started it
    service(module)        # in LightningModule.setup, on every rank: this rank's backend

So no rank races the creation of the actors: they exist before any other rank starts. Ranks that
are not children of rank 0 (torchrun, other nodes) get the pool's name from rank 0 through one
broadcast in `setup`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rayrag.retrieval.base import RetrievalBackend

log = logging.getLogger(__name__)

_RANK_VARS = ("RANK", "NODE_RANK", "LOCAL_RANK", "SLURM_PROCID", "GROUP_RANK")


def is_first_process() -> bool:
    """True in the process that starts a job (global rank 0 before any process group exists)."""
    for var in _RANK_VARS:
        value = os.environ.get(var, "0").strip() or "0"
        if value.isdigit() and int(value) != 0:
            return False
    return True


def _world():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class RetrievalService:
    """Makes this process's retrieval backend; for `ray`, owns the run's actor pool in the first process."""

    def __init__(self, name: str, kb_dir: str | Path, *, num_workers: int = 1, ray_address: str | None = None,
                 run_dir: Path | None = None, policy: str = "rayrag", config=None):
        self.name = name
        self.kb_dir = Path(kb_dir)
        self.num_workers = num_workers
        self.ray_address = ray_address
        self.run_dir = run_dir
        self.policy = policy
        self.config = config
        self.pool = None
        self.connection = None
        self._saved_env: str | None = None

    # ----- around trainer.fit ---------------------------------------------------------------------
    def __enter__(self) -> RetrievalService:
        if self.name == "ray" and is_first_process():
            from rayrag.retrieval.ray_connect import connect
            from rayrag.retrieval.ray_pool import NAMESPACE, POOL_ENV, RayPool

            self.connection = connect(self.ray_address, namespace=NAMESPACE)
            try:
                self.pool = RayPool.create(self.kb_dir, self.num_workers, address=self.connection.address,
                                           policy=self.policy, config=self.config)
            except BaseException:
                self.connection.close()
                self.connection = None
                raise
            self._saved_env = os.environ.get(POOL_ENV)
            os.environ[POOL_ENV] = self.pool.spec.to_json()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.name != "ray":
            return
        rank, world = _world()
        if world > 1 and exc_type is None:
            import torch.distributed as dist

            dist.barrier()  # every rank has closed its client before the pool and Ray go away
        if self.pool is not None:
            from rayrag.retrieval.ray_pool import POOL_ENV

            self.pool.close()
            self.pool = None
            if self._saved_env is None:
                os.environ.pop(POOL_ENV, None)
            else:
                os.environ[POOL_ENV] = self._saved_env
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    # ----- in LightningModule.setup, every rank ------------------------------------------------------
    def __call__(self, module=None) -> RetrievalBackend:
        if self.name != "ray":
            from rayrag.retrieval.factory import make_backend

            return make_backend(self.name, self.kb_dir, num_workers=self.num_workers,
                                ray_address=self.ray_address, run_dir=self.run_dir)
        from rayrag.retrieval.ray_pool import RayBackend

        rank, _ = _world()
        if self.pool is not None:  # rank 0, which created the pool before fit
            share_pool_spec(self.pool.spec)  # the other ranks receive it in make_ray_backend
            return RayBackend(self.pool, rank=rank, config=self.config)
        from rayrag.retrieval.factory import make_ray_backend

        return make_ray_backend(self.kb_dir, self.num_workers, ray_address=self.ray_address, policy=self.policy,
                                config=self.config)


def share_pool_spec(spec):
    """All ranks: rank 0's pool spec (a collective when a process group of size > 1 exists)."""
    _, world = _world()
    if world == 1:
        return spec
    import torch.distributed as dist

    box = [spec.to_json() if spec is not None else None]
    dist.broadcast_object_list(box, src=0)
    if box[0] is None:
        return None
    from rayrag.retrieval.ray_pool import PoolSpec

    return PoolSpec.from_json(box[0])
