"""Start W training processes in one gloo group on 127.0.0.1, follow their progress, collect their results."""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import socket
import time
from dataclasses import replace

from rayrag.bench import worker
from rayrag.bench.worker import RankJob
from rayrag.errors import RayragError



def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: list) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join(5)


def run_ranks(job: RankJob, progress=None) -> list[dict]:
    """Run `job` on ranks 0..job.world-1 and return their results, ordered by rank.

    `progress`, if given, is called with the number of timed steps rank 0 has finished.
    Raises `RayragError` (with the failing rank's traceback) if a rank fails or the run
    exceeds `job.timeout_s`; every process started here is stopped before returning.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker.main, args=(replace(job, rank=r, port=port), q), name=f"bench-rank{r}")
             for r in range(job.world)]
    results: dict[int, dict] = {}
    deadline = time.monotonic() + job.timeout_s
    try:
        for p in procs:
            p.start()
        while len(results) < job.world:
            try:
                kind, rank, payload = q.get(timeout=1.0)
            except queue_mod.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RayragError(f"{job.spec.label} with {job.world} workers: {dead[0].name} exited with "
                                      f"code {dead[0].exitcode} without a result")
                if time.monotonic() > deadline:
                    raise RayragError(f"{job.spec.label} with {job.world} workers: not done after "
                                      f"{job.timeout_s:.0f} s; raise --run-timeout or lower --steps")
                continue
            if kind == "step" and progress is not None:
                progress(payload)
            elif kind == "error":
                raise RayragError(f"{job.spec.label} with {job.world} workers: rank {rank} failed:\n{payload}")
            elif kind == "result":
                results[rank] = payload
        for p in procs:
            p.join(60)
    finally:
        _stop(procs)
        q.close()
    return [results[r] for r in range(job.world)]
