"""A benchmark backend name (`local`, `pytorch`, `pytorch-hf`, `ray:M`, `ray-hf:M`) -> a retrieval service (and a
probe of one of its processes), and the memory of the processes that hold its index."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rayrag.bench import memory
from rayrag.bench.options import BackendSpec
from rayrag.retrieval.base import RetrievalService
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


def open_probe(spec: BackendSpec, probe_kb: Path, *, ray_address: str | None, threads: int) -> RetrievalService:
    """A service like `spec`'s, of one process over the knowledge base `probe_kb` (a few vectors), its searches on
    `threads` FAISS threads: the baseline memory of one of `spec`'s processes without the index."""
    from rayrag.retrieval.options import RetrievalOptions
    from rayrag.retrieval.service import open_service as open_retrieval

    return open_retrieval(RetrievalOptions(kb=probe_kb, backend=spec.architecture, num_workers=1,
                                           ray_address=ray_address, policy=POLICIES.get(spec.kind, "rayrag"),
                                           settings=spec.settings, pool=PoolConfig(faiss_threads=threads)))


def index_memory(spec: BackendSpec, rank: int, pss_before: int, kb_dir: Path, service_pids: Sequence[int] = (),
                 probe_pid: int | None = None) -> dict:
    """This rank's share of the index memory: {"pids", "growth_bytes", "index_file", "passages_files"}.

    A process that holds the index (every `local` rank, `pytorch`'s rank 0) reports its growth since
    before it connected; every other rank reports the knowledge base's pages it maps to read passages
    itself (`pytorch`'s other ranks, ray clients that read titles and texts), not the rest of its growth
    (a Ray client's connection, gloo's buffers). Rank 0 adds the service's own processes (`service_pids`: a ray
    pool's actors). Their PSS before the index was loaded cannot be read (an actor loads it as it starts), so it
    is taken from `probe_pid`: one process of a service like this one over a knowledge base of a few vectors
    (`open_probe`), after one call, measured at the same moment, so it shares libraries with the same processes.
    """
    pids = [os.getpid()]
    if spec.architecture == "local" or (spec.architecture == "pytorch" and rank == 0):
        growth = memory.pss() - pss_before
    else:
        growth = sum(memory.kb_file_pss(pids, kb_dir).values())
    if service_pids and rank == 0:
        probe_pss = memory.pss(probe_pid)
        growth += memory.total_pss(service_pids) - len(service_pids) * probe_pss
        pids = pids + list(service_pids)
    return {"pids": pids, "growth_bytes": growth, **memory.kb_file_pss(pids, kb_dir)}
