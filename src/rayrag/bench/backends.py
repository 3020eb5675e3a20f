"""A benchmark backend name (`local`, `pytorch`, `pytorch-hf`, `ray:M`, `ray-hf:M`) -> a retrieval service, and
the memory of the processes that hold its index."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rayrag.bench import memory
from rayrag.bench.options import BackendSpec
from rayrag.retrieval.base import RetrievalClient, RetrievalService
from rayrag.retrieval.ray.config import PoolConfig

POLICIES = {"ray": "rayrag", "ray-hf": "reference"}
"""The pool policy of each ray kind: rayrag's own, or the reference's (random actor, private index copies)."""


def open_service(spec: BackendSpec, kb_dir: Path, *, ray_address: str | None,
                 pool: PoolConfig | None = None) -> RetrievalService:
    """The retrieval service of backend `spec` over `kb_dir`, opened by the benchmark's driver for one run;
    its spec travels to every rank, which connects its own client. The architecture (local, pytorch, ray) and
    the search settings (`spec.settings`: fast, or the reference's) are chosen separately; `pool` configures
    rayrag's pools (`ray:M`), never the reference's (`ray-hf:M`)."""
    from rayrag.retrieval.options import RetrievalOptions
    from rayrag.retrieval.service import open_service as open_retrieval

    policy = POLICIES.get(spec.kind, "rayrag")
    return open_retrieval(RetrievalOptions(kb=kb_dir, backend=spec.architecture, num_workers=max(1, spec.actors),
                                           ray_address=ray_address, policy=policy, settings=spec.settings,
                                           pool=pool if pool is not None and policy == "rayrag" else PoolConfig()))


def index_memory(spec: BackendSpec, client: RetrievalClient, rank: int, pss_before: int, kb_dir: Path,
                 probe_kb: Path | None) -> dict:
    """This rank's share of the index memory: {"pids", "growth_bytes", "index_file", "passages_files"}.

    A process that holds the index (every `local` rank, `pytorch`'s rank 0) reports its growth since
    before it connected; every other rank reports the knowledge base's pages it maps to read passages
    itself (`pytorch`'s other ranks, ray clients that read titles and texts), not the rest of its growth
    (a Ray client's connection, gloo's buffers). ray: rank 0 adds the actors. Their PSS before the index
    was loaded cannot be read (an actor loads it as it starts), so it is taken from a probe: one more
    actor of the same pool policy over a knowledge base of `probe_kb` (a few vectors), after one call,
    measured at the same moment, so it shares libraries with the same processes.
    """
    pids = [os.getpid()]
    if spec.architecture == "local" or (spec.architecture == "pytorch" and rank == 0):
        growth = memory.pss() - pss_before
    else:
        growth = sum(memory.kb_file_pss(pids, kb_dir).values())
    if spec.architecture == "ray" and rank == 0:
        actor_pids, actor_growth = _actor_growth(client, probe_kb)
        pids, growth = pids + actor_pids, growth + actor_growth
    return {"pids": pids, "growth_bytes": growth, **memory.kb_file_pss(pids, kb_dir)}


def _actor_growth(client, probe_kb: Path) -> tuple[list[int], int]:
    import ray

    from rayrag.retrieval.ray.config import PoolConfig
    from rayrag.retrieval.ray.pool import RayPool

    pool = client.pool
    probe = RayPool.create(probe_kb, 1, policy=client.spec.policy,
                           config=PoolConfig(faiss_threads=int(pool.info["threads"])))
    try:
        q = np.zeros((1, int(probe.info["dim"])), dtype=np.float32)
        ray.get(probe.actors[0].retrieve.remote(q, 1), timeout=120)
        pids = pool.pids()
        probe_pss = memory.pss(probe.pids()[0])
        after = memory.total_pss(pids)
    finally:
        probe.close()
    return pids, after - len(pids) * probe_pss
