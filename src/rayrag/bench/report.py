"""Rows of the benchmark and the files they are written to: results.json, results.csv, results.md.

A *round* of a (backend, workers) cell is one run of it: its ranks' seconds per call (steps,) each,
aligned by step. The headline is the step's **critical path**: for every step the longest call of any
rank (in DDP every rank waits for the slowest), summarised as mean, p50 and p90 over the steps.
A *row* holds the median over the cell's rounds of every timing (and their min-max for the
headline), the median memory, and every round's own values under `rounds`.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np

from rayrag.bench.options import BACKEND_KINDS, BackendSpec

REFERENCE = "pytorch-hf"
"""The row speedups are measured against: the reference's torch.distributed retriever."""
TIMINGS = ("critical_mean_s", "critical_p50_s", "critical_p90_s", "critical_max_s",
           "rank0_mean_s", "rank0_p50_s", "rank0_p90_s", "mean_s", "p50_s", "p90_s", "max_s")
"""Seconds per call of a round; a row holds the median of each over its rounds."""
SPREAD = ("critical_mean_s", "critical_p50_s", "critical_p90_s", "rank0_mean_s", "mean_s")
"""Timings whose min and max over the rounds a row holds too (`critical_mean_s_min`, `critical_mean_s_max`)."""
MEMORY = ("index_memory_bytes", "mapped_index_file_bytes", "mapped_passages_bytes")
"""Memory of a round (bytes); a row holds the median over its rounds."""
COLUMNS = ("backend", "settings", "workers", "retrieval_processes",
           "critical_mean_s", "critical_mean_s_min", "critical_mean_s_max", "critical_p50_s", "critical_p90_s",
           "rank0_mean_s", "rank0_p50_s", "rank0_p90_s", "mean_s", "p50_s", "p90_s", "max_s", "calls",
           "rounds_measured", "index_memory_bytes", "index_copies", "mapped_index_file_bytes",
           "mapped_passages_bytes", "ids_identical_to_local", "speedup_vs_pytorch_hf",
           "rank0_speedup_vs_pytorch_hf", "vs_floor", "wall_s")
"""The columns of results.csv, in order (results.json rows hold the same keys, and `rounds`)."""


def _summary(prefix: str, x: np.ndarray) -> dict:
    return {f"{prefix}mean_s": float(x.mean()), f"{prefix}p50_s": float(np.percentile(x, 50)),
            f"{prefix}p90_s": float(np.percentile(x, 90))}


def round_result(ranks: list[dict], *, memory: dict, round_: int, position: int, wall_s: float,
                 load_before: list[float], backend_stats: list[dict] | None = None) -> dict:
    """One round of a cell from the results of its W ranks (`seconds` (steps,) each, aligned by step).

    memory: growth_bytes (PSS growth of the index holders), index_file and passages_files (the PSS of the
    mapped index file and Arrow passages within it). `critical_s` (steps,) is each step's max over ranks.
    backend_stats: the service's own counters (a ray pool's, per actor), None when it has none."""
    seconds = np.stack([np.asarray(r["seconds"], dtype=np.float64) for r in ranks])  # (W, steps)
    critical = seconds.max(axis=0)
    return {
        "round": round_, "position": position,
        **_summary("critical_", critical), "critical_max_s": float(critical.max()),
        **_summary("rank0_", seconds[0]),
        **_summary("", seconds.ravel()), "max_s": float(seconds.max()), "calls": int(seconds.size),
        "index_memory_bytes": int(memory["growth_bytes"]), "mapped_index_file_bytes": int(memory["index_file"]),
        "mapped_passages_bytes": int(memory["passages_files"]),
        "ids_identical_to_local": None, "wall_s": wall_s, "load_average_before": load_before,
        "backend_stats": backend_stats,
        "critical_s": critical.tolist(), "seconds_by_rank": seconds.tolist(),
    }


def make_row(spec: BackendSpec, workers: int, rounds: list[dict], *, index_bytes: int) -> dict:
    """One row of the table from the cell's rounds (`round_result`): medians over the rounds, the headline's
    min-max, and the rounds themselves."""
    med = {f: statistics.median(r[f] for r in rounds) for f in (*TIMINGS, "wall_s")}
    mem = {f: int(round(statistics.median(r[f] for r in rounds))) for f in MEMORY}
    spread = {}
    for f in SPREAD:
        spread[f + "_min"] = min(r[f] for r in rounds)
        spread[f + "_max"] = max(r[f] for r in rounds)
    ids = [r["ids_identical_to_local"] for r in rounds]
    return {
        "backend": spec.label, "settings": spec.settings, "workers": workers,
        "retrieval_processes": spec.retrieval_processes(workers),
        **{f: med[f] for f in TIMINGS}, **spread, "calls": rounds[0]["calls"], "rounds_measured": len(rounds),
        **mem, "index_copies": mem["index_memory_bytes"] / index_bytes,
        "ids_identical_to_local": None if None in ids else all(ids),
        "speedup_vs_pytorch_hf": None, "rank0_speedup_vs_pytorch_hf": None, "vs_floor": None,
        "wall_s": med["wall_s"], "rounds": rounds,
    }


def add_speedups(rows: list[dict]) -> None:
    """speedup_vs_pytorch_hf = pytorch-hf's critical_mean_s at the same worker count / the row's;
    rank0_speedup_vs_pytorch_hf the same on rank 0's mean (None without a pytorch-hf row at that count)."""
    base = {r["workers"]: r for r in rows if r["backend"] == REFERENCE}
    for r in rows:
        b = base.get(r["workers"])
        r["speedup_vs_pytorch_hf"] = None if b is None else b["critical_mean_s"] / r["critical_mean_s"]
        r["rank0_speedup_vs_pytorch_hf"] = None if b is None else b["rank0_mean_s"] / r["rank0_mean_s"]


def add_floor(rows: list[dict], floors: dict[int, dict]) -> None:
    """Check each floor against the rows of its worker count and relate the rows to it.

    A floor is `valid` when no row's critical_mean_s is below its search_s (`beaten_by` names those that
    are); then `vs_floor` = critical_mean_s / search_s, otherwise None: an invalid floor is no yardstick."""
    for w, f in floors.items():
        f["beaten_by"] = [r["backend"] for r in rows if r["workers"] == w and r["critical_mean_s"] < f["search_s"]]
        f["valid"] = not f["beaten_by"]
    for r in rows:
        f = floors.get(r["workers"])
        r["vs_floor"] = r["critical_mean_s"] / f["search_s"] if f is not None and f["valid"] else None


def write_json(path: Path, machine: dict, command: str, floors: dict[int, dict], rows: list[dict],
               extra: dict) -> None:
    """results.json: machine, command, `floor` (the largest worker count's), `floors` (by worker count), rows,
    and `extra` (load average, round orders, options, failed runs, ...)."""
    floor = floors[max(floors)] if floors else None
    path.write_text(json.dumps({"machine": machine, "command": command, "floor": floor,
                                "floors": {str(w): f for w, f in sorted(floors.items())}, "rows": rows, **extra},
                               indent=1) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def label(backend: str) -> str:
    """The table's name of a backend: what it is, then its benchmark name."""
    kind, _, m = backend.partition(":")
    names = {"local": "local (index in every process)",
             "pytorch": "torch.distributed, rank 0 serves, rayrag's settings",
             "pytorch-hf": "torch.distributed, the reference's retriever (rank 0 serves, FAISS calls of 8, defaults)",
             "ray": f"Ray, rayrag pool, {m} retrieval process{'es' * (m != '1')}",
             "ray-hf": f"Ray, the reference's pool and settings, {m} retrieval process{'es' * (m != '1')}"}
    return f"{names.get(kind, backend)} `{backend}`" if kind in names else backend


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if abs(n) < 10 * 2**20 else f"{n / 2**20:,.0f} MiB"


def _times(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}×"


def _sec(x: float | None) -> str:
    """Seconds for a table: 4 decimals, or 3 significant digits below a millisecond (a tiny index)."""
    return "–" if x is None else f"{x:.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.2e}"


def _load(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "n/a"


def _header(machine: dict, options: dict, load: dict, floor: dict | None) -> list[str]:
    rounds = options.get("rounds")
    idx = (f"{floor['n_passages']:,} x {floor['dim']} {floor['index_type']} ({_mib(floor['index_bytes'])})"
           if floor else f"{options.get('index_size')} x {options.get('dim')} {options.get('index_type')}")
    return [
        f"Machine: {machine.get('cpu')}, {machine.get('logical_cores')} logical cores "
        f"({machine.get('physical_cores')} physical), {machine.get('memory_bytes', 0) / 2**30:.0f} GiB; "
        f"faiss {machine.get('faiss')}, torch {machine.get('torch')}, ray {machine.get('ray')}. "
        f"Load average (1 / 5 / 15 min): {_load(load.get('before'))} before the run, "
        f"{_load(load.get('after'))} after.",
        "",
        f"Index: {idx}; {options.get('batch_size')} queries per rank per step, k = {options.get('n_docs')}; "
        f"{options.get('steps')} timed steps after {options.get('warmup_steps')} warm-up, "
        f"{options.get('step_time')} s of simulated compute per step. {rounds} round(s), interleaved: each ran "
        f"every (backend, workers) cell once, in an order shuffled by seed {options.get('seed')} and the round "
        "(`round_orders` in results.json); a figure is the median over the rounds, (min–max) their range, "
        "and every round's values are kept in results.json (`rows[].rounds`).",
        "",
    ]


def _grid(rows: list[dict], failed: list[dict]) -> tuple[list[int], list[str], dict, set]:
    workers = sorted({r["workers"] for r in [*rows, *failed]})
    backends = sorted({r["backend"] for r in [*rows, *failed]}, key=_backend_order)
    cell = {(r["backend"], r["workers"]): r for r in rows}
    broken = {(f["backend"], f["workers"]) for f in failed}
    return workers, backends, cell, broken


def _backend_order(backend: str) -> tuple[int, int, str]:
    """The table's order: by kind as in BACKEND_KINDS, then by actors."""
    kind, _, m = backend.partition(":")
    return (BACKEND_KINDS.index(kind) if kind in BACKEND_KINDS else len(BACKEND_KINDS),
            int(m) if m.isdigit() else 0, backend)


def _cols(workers: list[int]) -> str:
    return " | ".join(f"{w} worker{'s' * (w != 1)}" for w in workers)


def _missing(b: str, w: int, broken: set) -> str:
    return "failed" if (b, w) in broken else "–"


def _floor_notes(floors: dict[int, dict]) -> list[str]:
    lines = []
    for w, f in sorted(floors.items()):
        if not f.get("valid", True):
            lines.append(f"**Floor invalid at {w} worker{'s' * (w != 1)}: {', '.join(f['beaten_by'])} beat it** "
                         f"(critical path below the floor's {_sec(f['search_s'])} s): this floor is no lower bound "
                         "in this run, so no ratio against it is given.")
    return lines


def _by_backend(backends: list[str], workers: list[int], cell: dict, broken: set, fmt) -> list[str]:
    """Table rows, one per backend, a column per worker count: `fmt(backend, row)` for the cells that have a row."""
    lines = []
    for b in backends:
        vals = [fmt(b, cell[(b, w)]) if (b, w) in cell else _missing(b, w, broken) for w in workers]
        lines.append(f"| {label(b)} | " + " | ".join(vals) + " |")
    return lines


def _critical_section(workers, backends, cell, broken, floors: dict[int, dict], rounds: int) -> list[str]:
    """The headline table: the critical path per backend and W, with the floor and the bound under it."""
    def fmt(b: str, r: dict) -> str:
        s = f"{_sec(r['critical_mean_s'])} ({_sec(r['critical_mean_s_min'])}–{_sec(r['critical_mean_s_max'])})"
        if r["speedup_vs_pytorch_hf"] is not None and b != REFERENCE:
            s += f" {_times(r['speedup_vs_pytorch_hf'])}"
        return s

    def floor_cell(w: int) -> str:
        f = floors.get(w)
        if f is None:
            return "–"
        s = _sec(f["search_s"])
        return s if f["valid"] else f"{s}: floor invalid: {', '.join(f['beaten_by'])} beat it"

    lines = ["## Critical path per step", "",
             f"| critical path, seconds per step (max over ranks; median of {rounds} rounds, min–max) | "
             f"{_cols(workers)} |", "|---" * (len(workers) + 1) + "|"]
    lines += _by_backend(backends, workers, cell, broken, fmt)
    if floors:
        lines.append("| floor: the step's W×B queries in one process, best threads | "
                     + " | ".join(floor_cell(w) for w in workers) + " |")
        lines.append("| the floor's search after a step's idle (--step_time) | "
                     + " | ".join(_sec(floors.get(w, {}).get("cadence_s")) for w in workers) + " |")
        lines.append("| bound: max(GEMM at the machine's rate, one read of the index) | "
                     + " | ".join(_sec(floors.get(w, {}).get("bound_s")) for w in workers) + " |")
    lines += ["", "Critical path: for each timed step, the longest retrieval call of any rank (in DDP every rank "
              "waits for the slowest), then its mean over the steps. (×) = speedup against `pytorch-hf`, the "
              "reference's torch.distributed retriever, at the same worker count, on the critical path (its "
              "seconds divided by the row's). `local`, `pytorch` and `ray:M` search with rayrag's best settings; "
              "`pytorch-hf` and `ray-hf:M` keep the reference's behaviour.", ""]
    notes = _floor_notes(floors)
    return lines + ([*notes, ""] if notes else [])


def _rank0_section(workers, backends, cell, broken, rounds: int) -> list[str]:
    """The reference's table: rank 0's mean per backend and W."""
    def fmt(b: str, r: dict) -> str:
        s = _sec(r["rank0_mean_s"])
        if r["rank0_speedup_vs_pytorch_hf"] is not None and b != REFERENCE:
            s += f" ({_times(r['rank0_speedup_vs_pytorch_hf'])})"
        return s

    lines = ["## Rank 0 (the reference's table)", "",
             f"| seconds per retrieval call (rank 0; median of {rounds} rounds) | {_cols(workers)} |",
             "|---" * (len(workers) + 1) + "|"]
    lines += _by_backend(backends, workers, cell, broken, fmt)
    return lines + ["", "Rank 0's mean, as the reference measured it; (×) against `pytorch-hf`'s rank 0 at the same "
                    "worker count. Rank 0 is not what a step pays: read the critical path above.", ""]


def _floor_section(floors: dict[int, dict]) -> list[str]:
    """Every W's floor, its bounds and whether it held."""
    floor = floors[max(floors)]
    lines = ["## Floor and bounds", "",
             "| workers | queries | floor: search s | its min s | threads | BLAS threshold | full retrieve s | "
             "search after a step's idle s | GEMM bound s | one read of the index s | bound s | valid |",
             "|---" * 12 + "|"]
    for w, f in sorted(floors.items()):
        valid = "yes" if f["valid"] else f"no: {', '.join(f['beaten_by'])} beat it"
        lines.append(f"| {w} | {f['queries']} | {_sec(f['search_s'])} | {_sec(f['min_s'])} | "
                     f"{f['settings']['threads']} | {f['settings']['blas_threshold']} | {_sec(f['retrieve_s'])} | "
                     f"{_sec(f.get('cadence_s'))} | {_sec(f['gemm_bound_s'])} | {_sec(f['stream_s'])} | {_sec(f['bound_s'])} | {valid} |")
    g, threads = floor["gemm"], max(t["threads"] for t in floor["trials"])
    return lines + ["", f"Floor: one step's W×B queries searched in one process with the FAISS index alone "
                    f"(OMP_WAIT_POLICY={floor['omp_wait_policy']}), best of 1..{threads} FAISS threads "
                    "(BLAS threshold 1; at the largest W also FAISS's default), median of the repeats. Search "
                    "after a step's idle: the floor's search again, each repeat after --step_time seconds idle as "
                    "a step's call comes after its compute (slower here than back to back: an explanation of "
                    "the rows, not a bound they are checked against)."
                    f" GEMM bound: N·d·W·B·2 flops at {g['flops_per_s'] / 1e9:.1f} GFLOP/s (the fastest "
                    f"float32 {g['m']}×{g['k']}×{g['n']} product here). Bound = the larger of it and one read of the "
                    "index from RAM" + ("." if floor["exact"] else "; neither bounds an approximate index (–)."), ""]


def _rows_section(rows: list[dict], floors: dict[int, dict], failed: list[dict]) -> list[str]:
    """Every row's details, then the failed runs."""
    lines = ["## Every row", "",
             "| backend | settings | workers | retrieval processes | critical mean s (min–max) | critical p50 s | "
             "critical p90 s | rank-0 mean s | rank-0 p90 s | all ranks: mean s | p50 s | p90 s | "
             "index memory (PSS growth) | index copies | of it: index file mapped | of it: passages mapped | "
             "ids = local | vs pytorch-hf | vs floor |",
             "|---" * 19 + "|"]
    for r in sorted(rows, key=lambda r: (_backend_order(r["backend"]), r["workers"])):
        f = floors.get(r["workers"])
        vs_floor = ("floor invalid" if f is not None and not f["valid"] else _times(r["vs_floor"]))
        lines.append(
            f"| {r['backend']} | {r['settings']} | {r['workers']} | {r['retrieval_processes']} | "
            f"{_sec(r['critical_mean_s'])} ({_sec(r['critical_mean_s_min'])}–{_sec(r['critical_mean_s_max'])}) | "
            f"{_sec(r['critical_p50_s'])} | {_sec(r['critical_p90_s'])} | {_sec(r['rank0_mean_s'])} | "
            f"{_sec(r['rank0_p90_s'])} | {_sec(r['mean_s'])} | {_sec(r['p50_s'])} | {_sec(r['p90_s'])} | "
            f"{_mib(r['index_memory_bytes'])} | {r['index_copies']:.2f} | {_mib(r['mapped_index_file_bytes'])} | "
            f"{_mib(r['mapped_passages_bytes'])} | {r['ids_identical_to_local']} | "
            f"{_times(r['speedup_vs_pytorch_hf'])} | {vs_floor} |")
    lines += ["", "Memory: the median over the rounds. ids = local: every rank's ids at every timed step equal "
              "the `local` backend's, in every round."]
    return lines + [f"\nFailed: {f['backend']} with {f['workers']} workers, round {f.get('round', 0) + 1}: "
                    f"{f['error'].splitlines()[0]}" for f in failed]


def markdown(rows: list[dict], floors: dict[int, dict], failed: list[dict] = (), *, machine: dict | None = None,
             options: dict | None = None, load: dict | None = None) -> str:
    """results.md: the header (machine, load, rounds), the critical-path table with the floor and the bound, the
    reference's table (rank 0), the floors, and every row's details. `failed` runs ({"backend", "workers",
    "round", "error"}) show as "failed" where no round of the cell succeeded, and are listed below."""
    workers, backends, cell, broken = _grid(rows, failed)
    rounds = (options or {}).get("rounds", max((r["rounds_measured"] for r in rows), default=0))
    floor = floors[max(floors)] if floors else None
    lines = ["# Retrieval benchmark", ""] + _header(machine or {}, options or {}, load or {}, floor)
    lines += _critical_section(workers, backends, cell, broken, floors, rounds)
    lines += _rank0_section(workers, backends, cell, broken, rounds)
    lines += _floor_section(floors) if floors else []
    lines += _rows_section(rows, floors, list(failed))
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, rows: list[dict], floors: dict[int, dict], failed: list[dict] = (), **header) -> None:
    path.write_text(markdown(rows, floors, failed, **header), encoding="utf-8")
