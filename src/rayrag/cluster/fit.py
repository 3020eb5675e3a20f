"""Does the cluster fit: refuse, with the flags that fix it, work whose Ray workers the live nodes cannot hold.

Ray waits forever for resources no node has; every verb that starts Ray workers (`index --ray`'s encoder actors,
`train --launcher ray`'s training workers) asks here first, with its own flag names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rayrag.errors import ClusterFitError

EPS = 1e-9
"""Slack against float round-off (3 workers of 1/3 CPU fit in 1 CPU)."""


def live_nodes() -> list[dict]:
    """The total resources of each live node of the cluster this process is connected to (`ray.nodes()`)."""
    import ray

    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def workers_that_fit(nodes: Sequence[Mapping[str, float]], cpus: float, gpus: float) -> int:
    """How many workers asking for `cpus` CPUs and `gpus` GPUs each fit on `nodes` (each a dict of total resources,
    as `ray.nodes()[i]["Resources"]`), packed node by node."""
    total = 0
    for resources in nodes:
        fit = math.floor(resources.get("CPU", 0.0) / cpus + EPS) if cpus > 0 else math.inf
        if gpus > 0:
            fit = min(fit, math.floor(resources.get("GPU", 0.0) / gpus + EPS))
        if fit == math.inf:  # asks for nothing: Ray places any number; one per node is enough to say it fits
            fit = 1 << 30
        total += int(fit)
    return total


def _largest_cpus_that_fit(nodes: Sequence[Mapping[str, float]], workers: int) -> float | None:
    """The largest CPU request (in hundredths) with which all `workers` fit: some node's CPUs split k ways."""
    return max((c for r in nodes for k in range(1, workers + 1)
                if (c := math.floor(r.get("CPU", 0.0) / k * 100) / 100) > 0
                and workers_that_fit(nodes, c, 0.0) >= workers), default=None)


def refusal(nodes: Sequence[Mapping[str, float]], workers: int, cpus_per_worker: float, use_gpu: bool, *,
            where: str, what: str = "workers", worker_flag: str = "--cluster.workers",
            cpus_flag: str = "--cluster.cpus_per_worker", gpu_flag: str = "--cluster.use_gpu") -> str | None:
    """Why `workers` workers of `cpus_per_worker` CPUs (and one GPU each with `use_gpu`) cannot all be placed on
    `nodes` (each a dict of total resources) of the cluster at `where`, in one line that names the flags that fix
    it (`what`: what the workers are, e.g. "encoder workers"); None when they fit."""
    gpus = 1.0 if use_gpu else 0.0
    fit = workers_that_fit(nodes, cpus_per_worker, gpus)
    if fit >= workers:
        return None
    fixes = [f"lower {worker_flag} to {fit}"] if fit > 0 else []
    if not use_gpu:
        cpus = _largest_cpus_that_fit(nodes, workers)
        if cpus is not None:
            fixes.append(f"ask for less with {cpus_flag} {cpus:g}")
    else:
        fixes.append(f"drop {gpu_flag}")
    fixes.append("add nodes to the cluster")
    have = ", ".join(f"{r.get('CPU', 0):g} CPU" + (f" {r.get('GPU', 0):g} GPU" if use_gpu else "") for r in nodes)
    ask = f"{cpus_per_worker:g} CPU" + (" and 1 GPU" if use_gpu else "")
    return (f"{worker_flag} {workers}: the Ray cluster at {where} cannot hold {workers} {what} of {ask} each "
            f"(its {len(nodes)} node(s): {have}; room for {fit}); " + ", or ".join(fixes))


def check_fits(workers: int, cpus_per_worker: float, use_gpu: bool, *, where: str, what: str = "workers",
               worker_flag: str = "--cluster.workers", cpus_flag: str = "--cluster.cpus_per_worker",
               gpu_flag: str = "--cluster.use_gpu") -> None:
    """Raise `ClusterFitError` (see `refusal`) unless the live nodes of the connected cluster hold the workers."""
    problem = refusal(live_nodes(), workers, cpus_per_worker, use_gpu, where=where, what=what,
                      worker_flag=worker_flag, cpus_flag=cpus_flag, gpu_flag=gpu_flag)
    if problem:
        raise ClusterFitError(problem)
