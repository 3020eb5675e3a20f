"""`rayrag bench retrieval`, start to end: index -> floors -> rounds of every (backend, workers) run, each round
in its own shuffled order -> rows (medians over the rounds) -> files."""

from __future__ import annotations

import contextlib
import json
import dataclasses
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

from rayrag.bench import backends, data, floor as floor_mod, launch, plot, report
from rayrag.bench.index import ensure_kb, ensure_probe_kb
from rayrag.bench.options import BackendSpec, BenchOptions
from rayrag.bench.worker import RankJob
from rayrag.errors import RayragError

log = logging.getLogger(__name__)


@dataclass
class BenchResult:
    """What a benchmark run produced: the rows, the floor of each worker count, and the files written."""

    rows: list[dict]
    floors: dict[int, dict]
    files: dict[str, Path] = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)
    """Runs that raised: {"backend", "workers", "round", "error"}; a cell with no successful round has no row."""
    seconds: float = 0.0

    @property
    def floor(self) -> dict:
        """The floor at the largest worker count."""
        return self.floors[max(self.floors)]


def machine() -> dict:
    """CPU model, cores and memory of this machine, and the versions that matter."""
    from importlib.metadata import version

    import faiss
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
            "ray": version("ray")}  # not `import ray`: Ray reads its configuration then, before `connect` set it


def _index_memory(ranks: list[dict]) -> dict:
    """Summed over the ranks' reports: growth of the holders' PSS, and the PSS of the mapped KB files in it."""
    return {key: sum(r["memory"][key] for r in ranks) for key in ("growth_bytes", "index_file", "passages_files")}


def ids_identical(ids: list[np.ndarray], reference: list[np.ndarray]) -> bool:
    """Whether every rank's ids (steps, B, k) int64 equal the reference's for the same rank."""
    return len(ids) <= len(reference) and all(np.array_equal(a, reference[r]) for r, a in enumerate(ids))


def _reference_ids(kb_dir: Path, opts: BenchOptions, world: int) -> list[np.ndarray]:
    """The ids the local backend gives ranks 0..world-1 over all steps, computed in this process."""
    from rayrag.retrieval.local import LocalSpec

    local = LocalSpec(kb=str(kb_dir)).connect()
    centres = data.centres(opts.seed, opts.n_clusters(), opts.dim)
    out = []
    for rank in range(world):
        steps = range(opts.warmup_steps, opts.warmup_steps + opts.steps)
        out.append(np.stack([local.search(data.queries(opts.seed, rank, s, opts.batch_size, centres),
                                          opts.n_docs)[1] for s in steps]))
    return out


def _probe(spec: BackendSpec, probe_kb: Path, service, opts: BenchOptions, address: str | None):
    """The probe of `backends.open_probe` for the processes of `service` (with their FAISS threads), after one call
    (the libraries and the search a process of the run has loaded by the time it is measured)."""
    probe = backends.open_probe(spec, probe_kb, ray_address=address, threads=int(service.stats()[0]["threads"]))
    try:
        client = probe.spec.connect()
        try:
            client.retrieve(data.queries(opts.seed, 0, 0, 1, data.centres(opts.seed, 1, opts.dim)), 1)
        finally:
            client.close()
    except BaseException:
        probe.close()
        raise
    return probe


def _run_one(spec: BackendSpec, w: int, opts: BenchOptions, kb_dir: Path, probe_kb: Path | None,
             address: str | None, progress: bool, desc: str) -> tuple[list[dict], list[dict]]:
    """One (backend, workers) run: the driver opens the backend's service, W ranks connect and step, then the
    driver reads the service's own counters and closes it. Returns the ranks' results and the counters; raises
    `RayragError` when a rank fails."""
    from tqdm.auto import tqdm

    service = backends.open_service(spec, kb_dir, ray_address=address, pool=opts.pool)
    probe = None
    try:
        pids = tuple(service.pids())  # processes of the service that hold the index, measured with a probe
        probe = _probe(spec, probe_kb, service, opts, address) if pids and probe_kb is not None else None
        job = RankJob(rank=0, world=w, port=0, spec=spec, retrieval_spec=service.spec.to_json(), kb_dir=kb_dir,
                      steps=opts.steps, warmup_steps=opts.warmup_steps,
                      batch_size=opts.batch_size, n_docs=opts.n_docs, step_time=opts.step_time, seed=opts.seed,
                      clusters=opts.n_clusters(), dim=opts.dim, timeout_s=opts.run_timeout, service_pids=pids,
                      probe_pid=probe.pids()[0] if probe is not None else None)
        bar = tqdm(total=opts.steps, desc=desc, disable=not progress, leave=True,
                   file=sys.stdout, dynamic_ncols=True)
        try:
            ranks = launch.run_ranks(job, progress=lambda n: bar.update(max(0, n - bar.n)))
        finally:
            bar.close()
        return ranks, service.stats()  # e.g. a ray pool's calls and merged searches per actor
    finally:
        if probe is not None:
            probe.close()
        service.close()


def round_order(cells: list[tuple[BackendSpec, int]], seed: int, round_: int) -> list[tuple[BackendSpec, int]]:
    """The order round `round_` runs the (backend, workers) `cells` in: a permutation drawn from `seed` and the
    round, so each round's order differs and a rerun with the same seed repeats it."""
    return [cells[i] for i in np.random.default_rng([seed, 7, round_]).permutation(len(cells))]


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class _Runs:
    """What the rounds produced: each cell's rounds (`report.round_result`) and its ranks' ids per round."""

    rounds: dict[tuple[str, int], list[dict]] = field(default_factory=dict)
    ids: dict[tuple[str, int], list[list[np.ndarray]]] = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)
    orders: list[list[dict]] = field(default_factory=list)


def _run_all(opts: BenchOptions, specs: list[BackendSpec], workers: list[int], kb_dir: Path, probe_kb: Path | None,
             progress: bool) -> _Runs:
    """--rounds rounds; each runs every (backend, workers) cell once, in `round_order`. Every run opens and closes
    its own service; one Ray connection (when a ray backend is named: to --ray_address, or a local instance started
    for the benchmark) serves all of them."""
    from rayrag.cluster import connect

    runs = _Runs()
    cells = [(s, w) for s in specs for w in workers]
    uses_ray = any(s.architecture == "ray" for s in specs)
    with connect(opts.ray_address, log_to_driver=False) if uses_ray else contextlib.nullcontext() as connection:
        address = connection.address if connection is not None else None
        for rnd in range(opts.rounds):
            order = round_order(cells, opts.seed, rnd)
            runs.orders.append([{"backend": s.label, "workers": w} for s, w in order])
            for position, (spec, w) in enumerate(order):
                load, t0 = _load_average(), time.perf_counter()
                try:
                    ranks, stats = _run_one(spec, w, opts, kb_dir, probe_kb, address, progress,
                                            desc=f"r{rnd + 1}/{opts.rounds} {spec.label:>9} W={w}")
                except RayragError as e:  # one broken run must not cost the others' results
                    log.error("round %d: %s", rnd + 1, e)
                    runs.failed.append({"backend": spec.label, "workers": w, "round": rnd, "error": str(e)})
                    continue
                key = (spec.label, w)
                runs.ids.setdefault(key, []).append([r["ids"] for r in ranks])
                runs.rounds.setdefault(key, []).append(report.round_result(
                    ranks, memory=_index_memory(ranks), round_=rnd, position=position,
                    wall_s=time.perf_counter() - t0, load_before=load, backend_stats=stats or None))
    if not runs.rounds:
        raise RayragError("every benchmark run failed:\n" + "\n".join(f["error"] for f in runs.failed))
    return runs


def _check_ids(runs: _Runs, kb_dir: Path, opts: BenchOptions) -> None:
    """Set each round's `ids_identical_to_local`: its ranks' ids against the local backend's (its first round,
    or computed in this process when `local` has no round)."""
    reference: dict[int, list[np.ndarray]] = {}
    for (label, w), rounds in runs.rounds.items():
        if w not in reference:
            local = runs.ids.get(("local", w))
            reference[w] = local[0] if local else _reference_ids(kb_dir, opts, w)
        for rnd, ids in zip(rounds, runs.ids[(label, w)]):
            rnd["ids_identical_to_local"] = ids_identical(ids, reference[w])


def _write(opts: BenchOptions, command: str | None, host: dict, floors: dict[int, dict], rows: list[dict],
           extra: dict) -> dict:
    """results.{json,csv,md,png} in opts.out; returns their paths by extension."""
    files = {name: opts.out / f"results.{name}" for name in ("json", "csv", "md", "png")}
    cmd = command or " ".join(shlex.quote(a) for a in sys.argv)
    report.write_json(files["json"], host, cmd, floors, rows, extra)
    report.write_csv(files["csv"], rows)
    report.write_markdown(files["md"], rows, floors, extra["failed_runs"], machine=host, options=extra["options"],
                          load=extra["load_average"])
    plot.plot(files["png"], rows, floors, title=f"{cmd}\n{host['cpu']}, {host['logical_cores']} cores, "
                                                f"{host['memory_bytes'] / 2**30:.0f} GiB, {opts.rounds} rounds")
    return files


def run_benchmark(opts: BenchOptions, command: str | None = None, progress: bool = True) -> BenchResult:
    """Run every backend of `opts` at every worker count on one index, --rounds times interleaved; write
    results.{json,csv,md,png} to opts.out."""
    opts.validate()
    t_start = time.perf_counter()
    load_before = _load_average()
    host = machine()
    workers, specs = opts.worker_counts(), opts.backend_specs()
    opts.out.mkdir(parents=True, exist_ok=True)
    kb_dir, built = ensure_kb(opts)
    probe_kb = ensure_probe_kb(opts) if any(s.architecture == "ray" for s in specs) else None
    kb_bytes = (kb_dir / "index.faiss").stat().st_size
    if progress:
        print(f"index: {kb_dir} ({'built now' if built else 'reused'}, {kb_bytes / 2**20:,.0f} MiB)", flush=True)
    floors = floor_mod.measure_floors_passive(kb_dir, workers=workers, batch_size=opts.batch_size, k=opts.n_docs,
                                              seed=opts.seed, clusters=opts.n_clusters(),
                                              repeats=opts.floor_repeats, index_type=opts.index_type,
                                              step_time=opts.step_time)
    if progress:
        for w, f in floors.items():
            bound = "n/a" if f["bound_s"] is None else f"{f['bound_s']:.4f} s"
            print(f"floor, {w} workers: search {f['search_s']:.4f} s ({f['settings']}; "
                  f"{f['cadence_s']:.4f} s after {opts.step_time:g} s idle), bound {bound}", flush=True)
    runs = _run_all(opts, specs, workers, kb_dir, probe_kb, progress)
    _check_ids(runs, kb_dir, opts)
    rows = [report.make_row(spec, w, runs.rounds[(spec.label, w)], index_bytes=kb_bytes)
            for spec in specs for w in workers if (spec.label, w) in runs.rounds]
    report.add_speedups(rows)
    report.add_floor(rows, floors)
    extra = {"load_average": {"before": load_before, "after": _load_average()},
             "round_orders": runs.orders,
             "options": json.loads(json.dumps(dataclasses.asdict(opts), default=str)),
             "kb_dir": str(kb_dir), "failed_runs": runs.failed, "seconds": time.perf_counter() - t_start}
    files = _write(opts, command, host, floors, rows, extra)
    return BenchResult(rows=rows, floors=floors, files=files, failed=runs.failed,
                       seconds=time.perf_counter() - t_start)
