"""One training process of the benchmark: the loop a DDP rank runs, with only its retrieval calls timed.

Each step: make B seeded query vectors -> the full retrieval call (`client.retrieve`: ids,
passage vectors and texts) -> the simulated compute time -> a small all-reduce, as DDP's
gradient sync would. Results go back to the launcher through a queue.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from rayrag.bench.options import BackendSpec

GRAD_FLOATS = 1024
"""Size of the all-reduce that stands in for DDP's gradient sync."""


@dataclass
class RankJob:
    """What one training process runs."""

    rank: int
    world: int
    port: int
    """TCP port of the gloo rendezvous on 127.0.0.1."""
    spec: BackendSpec
    retrieval_spec: str
    """The spec (JSON) of the retrieval service the driver opened for this run; each rank connects a client."""
    kb_dir: Path
    steps: int
    warmup_steps: int
    batch_size: int
    n_docs: int
    step_time: float
    seed: int
    clusters: int
    dim: int
    timeout_s: float
    service_pids: tuple[int, ...] = ()
    """Processes of the service that hold the index (a ray pool's actors), measured by rank 0."""
    probe_pid: int | None = None
    """A process of a probe service like the run's, over a few vectors: the baseline of `service_pids`' memory
    (see `backends.index_memory`)."""


def _check(r, job: RankJob) -> None:
    b, k = job.batch_size, job.n_docs
    if (r.ids.shape != (b, k) or r.vectors.shape != (b, k, job.dim) or len(r.texts) != b
            or any(len(t) != k for t in r.texts)):
        raise RuntimeError(f"{job.spec.label}: retrieve returned ids {r.ids.shape}, vectors {r.vectors.shape}, "
                           f"{len(r.texts)} text lists for {b} queries and k={k}")


def _loop(job: RankJob, queue) -> dict:
    import torch
    import torch.distributed as dist

    from rayrag.bench import backends, data, memory

    # Import what the backends import, so the memory measured below grows by the index, not by code.
    import datasets  # noqa: F401
    import faiss  # noqa: F401

    import rayrag.retrieval.search  # noqa: F401

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{job.port}", rank=job.rank,
                            world_size=job.world, timeout=timedelta(seconds=job.timeout_s))
    try:
        dist.barrier()
        pss_before = memory.pss()
        from rayrag.retrieval.service import load_spec

        client = load_spec(job.retrieval_spec).connect()
        try:
            centres = data.centres(job.seed, job.clusters, job.dim)
            grad = torch.zeros(GRAD_FLOATS)
            total = job.warmup_steps + job.steps
            seconds = np.zeros(job.steps)
            ids = np.zeros((job.steps, job.batch_size, job.n_docs), dtype=np.int64)
            mem = {}
            for step in range(total):
                q = data.queries(job.seed, job.rank, step, job.batch_size, centres)
                t0 = time.perf_counter()
                r = client.retrieve(q, job.n_docs)
                dt = time.perf_counter() - t0
                _check(r, job)
                timed = step - job.warmup_steps
                if timed >= 0:
                    seconds[timed], ids[timed] = dt, r.ids
                time.sleep(job.step_time)
                grad.fill_(1.0)
                dist.all_reduce(grad)
                if step == job.warmup_steps - 1:  # every holder has mapped the index: measure
                    dist.barrier()
                    mem = backends.index_memory(job.spec, job.rank, pss_before, job.kb_dir, job.service_pids,
                                                job.probe_pid)
                    dist.barrier()
                if job.rank == 0:
                    queue.put(("step", job.rank, step + 1 - job.warmup_steps))
            dist.barrier()
        finally:
            client.close()
    finally:
        dist.destroy_process_group()
    return {"rank": job.rank, "pid": os.getpid(), "seconds": seconds, "ids": ids, "memory": mem}


def main(job: RankJob, queue) -> None:
    """Entry point of a spawned training process: run the loop, put ("result" | "error", rank, payload)."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    try:
        queue.put(("result", job.rank, _loop(job, queue)))
    except BaseException:  # the launcher reports it with the backend and rank
        queue.put(("error", job.rank, traceback.format_exc()))
        raise SystemExit(1)
