"""A benchmark backend name (`local`, `pytorch`, `ray:M`, `ray-hf:M`) -> a retrieval backend from the factory,
and the memory of the processes that hold its index."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from rayrag.bench import memory
from rayrag.bench.options import BackendSpec
from rayrag.retrieval.base import RetrievalBackend

MODULES = {"local": "rayrag.retrieval.local", "pytorch": "rayrag.retrieval.pytorch",
           "ray": "rayrag.retrieval.ray_pool", "ray-hf": "rayrag.retrieval.ray_pool"}
"""The module that implements each kind of backend."""

POLICIES = {"ray": "rayrag", "ray-hf": "reference"}
"""The pool policy of each ray kind: rayrag's own, or the reference's (random actor, private index copies)."""


def available(spec: BackendSpec) -> bool:
    """Whether this rayrag has the module that implements `spec`."""
    return importlib.util.find_spec(MODULES[spec.kind]) is not None


def open_backend(spec: BackendSpec, kb_dir: Path, *, ray_address: str | None) -> RetrievalBackend:
    """Connect this training process to backend `spec` over `kb_dir`.

    A collective for pytorch and ray: call it on every rank at the same point, after the gloo group."""
    from rayrag.retrieval.factory import make_backend

    if spec.kind in ("local", "pytorch"):
        return make_backend(spec.kind, kb_dir)
    return make_backend("ray", kb_dir, num_workers=spec.actors, ray_address=ray_address, policy=POLICIES[spec.kind])


def index_memory(spec: BackendSpec, backend: RetrievalBackend, rank: int, pss_before: int, kb_dir: Path,
                 probe_kb: Path | None) -> dict:
    """This rank's share of the index memory: {"pids", "growth_bytes", "index_file", "passages_files"}.

    local: every rank holds its own (memory-mapped) knowledge base, measured before and after it
    opened it; pytorch: rank 0 alone. ray: rank 0 reports the actors. Their PSS before the index
    was loaded cannot be read (an actor loads it as it starts), so it is taken from a probe: one
    more actor of the same pool policy over a knowledge base of `probe_kb` (a few vectors), after
    one call, measured at the same moment, so it shares libraries with the same processes.
    """
    if spec.kind != "local" and rank != 0:
        return {"pids": [], "growth_bytes": 0, "index_file": 0, "passages_files": 0}
    if spec.kind in ("local", "pytorch"):
        pids = [os.getpid()]
        growth = memory.pss() - pss_before
    else:
        pids, growth = _actor_growth(backend, probe_kb)
    return {"pids": pids, "growth_bytes": growth, **memory.kb_file_pss(pids, kb_dir)}


def _actor_growth(backend, probe_kb: Path) -> tuple[list[int], int]:
    import ray

    from rayrag.retrieval.ray_pool import PoolConfig, RayPool

    pool = backend.pool
    probe = RayPool.create(probe_kb, 1, address=pool.spec.address, policy=pool.spec.policy,
                           config=PoolConfig(faiss_threads=int(pool.info["threads"])))
    try:
        q = np.zeros((1, int(probe.info["dim"])), dtype=np.float32)
        ray.get(probe.actors[0].retrieve.remote(q, 1), timeout=120)
        pids = backend.actor_pids()
        probe_pss = memory.pss(probe.pids()[0])
        after = memory.total_pss(pids)
    finally:
        probe.close()
    return pids, after - len(pids) * probe_pss
