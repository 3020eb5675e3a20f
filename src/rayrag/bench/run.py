"""`rayrag bench retrieval`, start to end: index -> floor -> every (backend, workers) run -> rows -> files."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from rayrag.bench import backends, floor as floor_mod, launch, plot, report
from rayrag.bench.cluster import ray_cluster
from rayrag.bench.index import ensure_kb, ensure_probe_kb
from rayrag.bench.options import BackendSpec, BenchOptions
from rayrag.bench.worker import RankJob
from rayrag.errors import RayragError

log = logging.getLogger(__name__)


@dataclass
class BenchResult:
    """What a benchmark run produced: the rows, the floor, and the files written."""

    rows: list[dict]
    floor: dict
    files: dict[str, Path] = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)
    """Runs that raised: {"backend", "workers", "error"}; they have no row."""
    seconds: float = 0.0


def machine() -> dict:
    """CPU model, cores and memory of this machine, and the versions that matter."""
    import faiss
    import ray
    import torch

    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "logical_cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "memory_bytes": psutil.virtual_memory().total, "platform": platform.platform(),
            "python": platform.python_version(), "faiss": faiss.__version__, "torch": torch.__version__,
            "ray": ray.__version__, "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def _index_memory(ranks: list[dict]) -> dict:
    """Summed over the ranks' reports: growth of the holders' PSS, and the PSS of the mapped KB files in it."""
    return {key: sum(r["memory"][key] for r in ranks) for key in ("growth_bytes", "index_file", "passages_files")}


def ids_identical(ids: list[np.ndarray], reference: list[np.ndarray]) -> bool:
    """Whether every rank's ids (steps, B, k) int64 equal the reference's for the same rank."""
    return len(ids) <= len(reference) and all(np.array_equal(a, reference[r]) for r, a in enumerate(ids))


def _reference_ids(kb_dir: Path, opts: BenchOptions, world: int) -> list[np.ndarray]:
    """The ids the local backend gives ranks 0..world-1 over all steps, computed in this process."""
    from rayrag.bench import data
    from rayrag.retrieval.local import LocalSpec

    local = LocalSpec(kb=str(kb_dir)).connect()
    centres = data.centres(opts.seed, opts.n_clusters(), opts.dim)
    out = []
    for rank in range(world):
        steps = range(opts.warmup_steps, opts.warmup_steps + opts.steps)
        out.append(np.stack([local.search(data.queries(opts.seed, rank, s, opts.batch_size, centres),
                                          opts.n_docs)[1] for s in steps]))
    return out


def _run_one(spec: BackendSpec, w: int, opts: BenchOptions, kb_dir: Path, probe_kb: Path | None,
             address: str | None, progress: bool) -> list[dict]:
    """One (backend, workers) run: the driver opens the backend's service, W ranks connect and step, then the
    driver closes it. Returns the ranks' results; raises `RayragError` when a rank fails."""
    from tqdm.auto import tqdm

    service = backends.open_service(spec, kb_dir, ray_address=address)
    try:
        job = RankJob(rank=0, world=w, port=0, spec=spec, retrieval_spec=service.spec.to_json(), kb_dir=kb_dir,
                      probe_kb=probe_kb, steps=opts.steps, warmup_steps=opts.warmup_steps,
                      batch_size=opts.batch_size, n_docs=opts.n_docs, step_time=opts.step_time, seed=opts.seed,
                      clusters=opts.n_clusters(), dim=opts.dim, timeout_s=opts.run_timeout)
        bar = tqdm(total=opts.steps, desc=f"{spec.label:>9} W={w}", disable=not progress, leave=True,
                   file=sys.stdout, dynamic_ncols=True)
        try:
            return launch.run_ranks(job, progress=lambda n: bar.update(max(0, n - bar.n)))
        finally:
            bar.close()
    finally:
        service.close()


def _run_all(opts: BenchOptions, specs: list[BackendSpec], workers: list[int], kb_dir: Path, probe_kb: Path | None,
             kb_bytes: int, progress: bool) -> tuple[list[dict], list[dict], dict]:
    """Every (backend, workers) run in order: (rows, failed runs, ids of each run by (label, workers))."""
    rows, failed, ids_by_run = [], [], {}
    uses_ray = any(s.kind in backends.POLICIES for s in specs)
    with ray_cluster(opts.ray_address) if uses_ray else contextlib.nullcontext(None) as address:
        for spec in specs:
            for w in workers:
                t0 = time.perf_counter()
                try:
                    ranks = _run_one(spec, w, opts, kb_dir, probe_kb, address, progress)
                except RayragError as e:  # one broken backend must not cost the others' results
                    log.error("%s", e)
                    failed.append({"backend": spec.label, "workers": w, "error": str(e)})
                    continue
                ids_by_run[(spec.label, w)] = [r["ids"] for r in ranks]
                rows.append(report.make_row(spec, w, ranks, memory=_index_memory(ranks), index_bytes=kb_bytes,
                                            wall_s=time.perf_counter() - t0))
    if not rows:
        raise RayragError("every benchmark run failed:\n" + "\n".join(f["error"] for f in failed))
    return rows, failed, ids_by_run


def _write(opts: BenchOptions, command: str | None, host: dict, flo: dict, rows: list[dict], extra: dict) -> dict:
    """results.{json,csv,md,png} in opts.out; returns their paths by extension."""
    files = {name: opts.out / f"results.{name}" for name in ("json", "csv", "md", "png")}
    cmd = command or " ".join(shlex.quote(a) for a in sys.argv)
    report.write_json(files["json"], host, cmd, flo, rows, extra)
    report.write_csv(files["csv"], rows)
    report.write_markdown(files["md"], rows, flo, extra["failed_runs"])
    plot.plot(files["png"], rows, flo, title=f"{cmd}\n{host['cpu']}, {host['logical_cores']} cores, "
                                             f"{host['memory_bytes'] / 2**30:.0f} GiB")
    return files


def run_benchmark(opts: BenchOptions, command: str | None = None, progress: bool = True) -> BenchResult:
    """Run every backend of `opts` at every worker count on one index; write results.{json,csv,md,png} to opts.out."""
    opts.validate()
    t_start = time.perf_counter()
    host = machine()
    workers, specs = opts.worker_counts(), opts.backend_specs()
    opts.out.mkdir(parents=True, exist_ok=True)
    kb_dir, built = ensure_kb(opts)
    probe_kb = ensure_probe_kb(opts) if any(s.kind in backends.POLICIES for s in specs) else None
    kb_bytes = (kb_dir / "index.faiss").stat().st_size
    if progress:
        print(f"index: {kb_dir} ({'built now' if built else 'reused'}, {kb_bytes / 2**20:,.0f} MiB)", flush=True)
    flo = floor_mod.measure_floor(kb_dir, n_queries=max(workers) * opts.batch_size, batch_size=opts.batch_size,
                                  k=opts.n_docs, seed=opts.seed, clusters=opts.n_clusters(),
                                  repeats=opts.floor_repeats, index_type=opts.index_type)
    if progress:
        print(f"floor: search {flo['search_s']:.4f} s ({flo['settings']}), read once {flo['stream_s']:.4f} s",
              flush=True)
    rows, failed, ids_by_run = _run_all(opts, specs, workers, kb_dir, probe_kb, kb_bytes, progress)
    reference = {}
    for row in rows:
        w = row["workers"]
        if w not in reference:
            reference[w] = ids_by_run.get(("local", w)) or _reference_ids(kb_dir, opts, w)
        row["ids_identical_to_local"] = ids_identical(ids_by_run[(row["backend"], w)], reference[w])
    report.add_speedups(rows)
    extra = {"options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
             "kb_dir": str(kb_dir), "failed_runs": failed, "seconds": time.perf_counter() - t_start}
    files = _write(opts, command, host, flo, rows, extra)
    return BenchResult(rows=rows, floor=flo, files=files, failed=failed, seconds=time.perf_counter() - t_start)
