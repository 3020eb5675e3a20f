"""Rows of the benchmark and the files they are written to: results.json, results.csv, results.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from rayrag.bench.options import BackendSpec

COLUMNS = ("backend", "workers", "retrieval_processes", "rank0_mean_s", "rank0_p50_s", "rank0_p90_s",
           "mean_s", "p50_s", "p90_s", "max_s", "calls", "index_memory_bytes", "index_copies",
           "mapped_index_file_bytes", "mapped_passages_bytes",
           "ids_identical_to_local", "speedup_vs_pytorch", "wall_s")
"""The columns of results.csv, in order (results.json rows hold the same keys)."""


def make_row(spec: BackendSpec, workers: int, ranks: list[dict], *, memory: dict, index_bytes: int,
             wall_s: float) -> dict:
    """One row of the table from the results of `workers` ranks (seconds (steps,) per rank).

    memory: growth_bytes (PSS growth of the index holders), index_file and passages_files (the PSS
    of the mapped index file and Arrow passages within it)."""
    rank0 = np.asarray(ranks[0]["seconds"])
    every = np.concatenate([np.asarray(r["seconds"]) for r in ranks])
    return {
        "backend": spec.label, "workers": workers, "retrieval_processes": spec.retrieval_processes(workers),
        "rank0_mean_s": float(rank0.mean()), "rank0_p50_s": float(np.percentile(rank0, 50)),
        "rank0_p90_s": float(np.percentile(rank0, 90)),
        "mean_s": float(every.mean()), "p50_s": float(np.percentile(every, 50)),
        "p90_s": float(np.percentile(every, 90)), "max_s": float(every.max()), "calls": int(every.size),
        "index_memory_bytes": memory["growth_bytes"], "index_copies": memory["growth_bytes"] / index_bytes,
        "mapped_index_file_bytes": memory["index_file"], "mapped_passages_bytes": memory["passages_files"],
        "ids_identical_to_local": None, "speedup_vs_pytorch": None, "wall_s": wall_s,
        "backend_stats": ranks[0].get("backend_stats"),
    }


def add_speedups(rows: list[dict]) -> None:
    """speedup_vs_pytorch = pytorch's rank-0 mean at the same worker count / the row's (None without pytorch)."""
    base = {r["workers"]: r["rank0_mean_s"] for r in rows if r["backend"] == "pytorch"}
    for r in rows:
        b = base.get(r["workers"])
        r["speedup_vs_pytorch"] = None if b is None else b / r["rank0_mean_s"]


def write_json(path: Path, machine: dict, command: str, floor: dict, rows: list[dict], extra: dict) -> None:
    path.write_text(json.dumps({"machine": machine, "command": command, "floor": floor, "rows": rows, **extra},
                               indent=2) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _label(backend: str) -> str:
    kind, _, m = backend.partition(":")
    names = {"local": "local (index in every process)", "pytorch": "torch.distributed (rank 0 serves)",
             "ray": f"Ray, rayrag pool, {m} retrieval processes",
             "ray-hf": f"Ray, reference policy, {m} retrieval processes"}
    return names.get(kind, backend)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if abs(n) < 10 * 2**20 else f"{n / 2**20:,.0f} MiB"


def markdown(rows: list[dict], floor: dict, failed: list[dict] = ()) -> str:
    """The reference's table (seconds per retrieval call on rank 0, by backend and workers) and the details;
    `failed` runs ({"backend", "workers", "error"}) show as "failed" and are listed below."""
    workers = sorted({r["workers"] for r in [*rows, *failed]})
    backends = list(dict.fromkeys(r["backend"] for r in [*rows, *failed]))
    broken = {(f["backend"], f["workers"]) for f in failed}
    cell = {(r["backend"], r["workers"]): r for r in rows}
    head = "| seconds per retrieval call (rank 0) | " + " | ".join(f"{w} workers" for w in workers) + " |"
    lines = [head, "|---" * (len(workers) + 1) + "|"]
    for b in backends:
        vals = []
        for w in workers:
            r = cell.get((b, w))
            if r is None:
                vals.append("failed" if (b, w) in broken else "–")
                continue
            s = f"{r['rank0_mean_s']:.4f}"
            if r["speedup_vs_pytorch"] is not None and b != "pytorch":
                s += f" ({r['speedup_vs_pytorch']:.2f}×)"
            vals.append(s)
        lines.append(f"| {_label(b)} | " + " | ".join(vals) + " |")
    lines += ["", "(×) = speedup against torch.distributed at the same worker count "
              "(its seconds divided by the row's).", "",
              f"Floor (largest W, {floor['queries']} queries in one process): FAISS search "
              f"{floor['search_s']:.4f} s with {floor['settings']['threads']} thread(s), BLAS threshold "
              f"{floor['settings']['blas_threshold']}; the full retrieve call {floor['retrieve_s']:.4f} s; "
              f"reading the index once from RAM {floor['stream_s']:.4f} s.", "",
              "| backend | workers | retrieval processes | rank-0 mean s | rank-0 p90 s | all ranks: mean s | "
              "p50 s | p90 s | index memory (PSS growth) | index copies | of it: index file mapped | "
              "of it: passages mapped | ids = local | vs pytorch |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        speed = "n/a" if r["speedup_vs_pytorch"] is None else f"{r['speedup_vs_pytorch']:.2f}×"
        lines.append(f"| {r['backend']} | {r['workers']} | {r['retrieval_processes']} | {r['rank0_mean_s']:.4f} | "
                     f"{r['rank0_p90_s']:.4f} | {r['mean_s']:.4f} | {r['p50_s']:.4f} | {r['p90_s']:.4f} | "
                     f"{_mib(r['index_memory_bytes'])} | {r['index_copies']:.2f} | "
                     f"{_mib(r['mapped_index_file_bytes'])} | {_mib(r['mapped_passages_bytes'])} | "
                     f"{r['ids_identical_to_local']} | {speed} |")
    for f in failed:
        lines.append(f"\nFailed: {f['backend']} with {f['workers']} workers: {f['error'].splitlines()[0]}")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, rows: list[dict], floor: dict, failed: list[dict] = ()) -> None:
    path.write_text(markdown(rows, floor, failed), encoding="utf-8")
