"""`rayrag bench retrieval`: a real smoke run of the benchmark (tiny index, every backend that exists), and
the pieces that turn timings into the table."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from rayrag.bench.options import BackendSpec, BenchOptions
from rayrag.bench.report import COLUMNS, add_speedups
from rayrag.bench.run import ids_identical
from rayrag.errors import RayragError

STEPS, WORKERS = 4, (1, 2)


def _backends() -> list[str]:
    """Every kind of backend: local, pytorch, and the ray pool in both policies."""
    return ["local", "pytorch", "ray:2", "ray-hf:2"]


def _run_cli(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """The real command line in its own process group; whatever it leaves behind is killed."""
    proc = subprocess.Popen([sys.executable, "-m", "rayrag", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env={**os.environ, "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"})
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    names = _backends()
    proc = _run_cli(["bench", "retrieval", "--out", str(out), "--index-size", "2000", "--dim", "32",
                     "--workers", ",".join(map(str, WORKERS)), "--backends", ",".join(names),
                     "--steps", str(STEPS), "--warmup-steps", "1", "--step-time", "0.01", "--floor-repeats", "1",
                     "--batch-size", "4", "--n-docs", "3"], timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return out, names, proc


@pytest.mark.slow
def test_bench_writes_every_file_with_one_row_per_backend_and_worker_count(bench_out):
    out, names, proc = bench_out
    for name in ("results.json", "results.csv", "results.md", "results.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((out / "results.json").read_text())
    assert {"machine", "command", "floor", "rows"} <= set(res)
    assert res["machine"]["logical_cores"] == os.cpu_count()
    assert res["command"].startswith("rayrag bench retrieval") and "--index-size 2000" in res["command"]
    rows = res["rows"]
    assert sorted((r["backend"], r["workers"]) for r in rows) == sorted((b, w) for b in names for w in WORKERS)
    for r in rows:
        assert set(COLUMNS) <= set(r), set(COLUMNS) - set(r)
        assert r["calls"] == r["workers"] * STEPS
        assert 0 < r["p50_s"] <= r["p90_s"] <= r["max_s"] and 0 < r["mean_s"] <= r["max_s"]
        assert r["retrieval_processes"] == BackendSpec.parse(r["backend"]).retrieval_processes(r["workers"])
    # the markdown table: one line per backend, one column per worker count
    md = (out / "results.md").read_text()
    assert md.splitlines()[0] == "| seconds per retrieval call (rank 0) | 1 workers | 2 workers |"
    assert sum(line.startswith("| ") for line in md.split("\n\n")[0].splitlines()) == 1 + len(names)
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(t["backend"], int(t["workers"])) for t in table] == [(r["backend"], r["workers"]) for r in rows]
    assert [float(t["rank0_mean_s"]) for t in table] == [r["rank0_mean_s"] for r in rows]
    assert "results written to" in proc.stdout


@pytest.mark.slow
def test_bench_every_backend_returns_the_local_ids(bench_out):
    rows = json.loads((bench_out[0] / "results.json").read_text())["rows"]
    assert [r["ids_identical_to_local"] for r in rows] == [True] * len(rows)


@pytest.mark.slow
def test_bench_speedups_are_pytorch_over_the_row_at_the_same_worker_count(bench_out):
    rows = json.loads((bench_out[0] / "results.json").read_text())["rows"]
    torch_s = {r["workers"]: r["rank0_mean_s"] for r in rows if r["backend"] == "pytorch"}
    assert set(torch_s) == set(WORKERS)
    for r in rows:
        assert r["speedup_vs_pytorch"] == pytest.approx(torch_s[r["workers"]] / r["rank0_mean_s"], rel=1e-12)
        if r["backend"] == "pytorch":
            assert r["speedup_vs_pytorch"] == 1.0


@pytest.mark.slow
def test_bench_floor_names_its_settings(bench_out):
    floor = json.loads((bench_out[0] / "results.json").read_text())["floor"]
    assert floor["queries"] == max(WORKERS) * 4  # one step of the largest worker count, batch 4
    assert floor["stream_s"] > 0 and floor["retrieve_s"] > 0
    best = min(floor["trials"], key=lambda t: t["search_s"])
    assert floor["search_s"] == best["search_s"] and 0 < best["min_s"] <= best["search_s"]
    assert floor["settings"] == {"threads": best["threads"], "blas_threshold": best["blas_threshold"]}
    assert {t["blas_threshold"] for t in floor["trials"]} == {1, floor["faiss_default_blas_threshold"]}
    assert len(floor["trials"]) == 2 * os.cpu_count()  # every thread count, FAISS's threshold and 1


@pytest.mark.slow
def test_bench_memory_sees_who_maps_the_index_file(bench_out):
    """local and pytorch map the index file (IO_FLAG_MMAP_IFC); the reference's actors read a private copy."""
    rows = {(r["backend"], r["workers"]): r for r in json.loads((bench_out[0] / "results.json").read_text())["rows"]}
    for w in WORKERS:
        assert rows[("local", w)]["mapped_index_file_bytes"] > 0
        assert rows[("pytorch", w)]["mapped_index_file_bytes"] > 0
        if ("ray:2", w) in rows:
            assert rows[("ray:2", w)]["mapped_index_file_bytes"] > 0
            assert rows[("ray-hf:2", w)]["mapped_index_file_bytes"] == 0


# ----- pieces -------------------------------------------------------------------------------------------

def test_ids_identical_compares_every_rank_and_step():
    ref = [np.arange(12).reshape(2, 2, 3), np.arange(12, 24).reshape(2, 2, 3)]
    assert ids_identical([a.copy() for a in ref], ref)
    assert ids_identical([ref[0].copy()], ref)  # fewer ranks: compared rank by rank
    other = [a.copy() for a in ref]
    other[1][1, 1, 2] += 1
    assert not ids_identical(other, ref)
    assert not ids_identical(ref + [ref[0]], ref)  # a rank with no reference is not identical


def test_add_speedups_divides_pytorch_by_the_row_at_the_same_worker_count():
    rows = [{"backend": "pytorch", "workers": 2, "rank0_mean_s": 3.0},
            {"backend": "ray:2", "workers": 2, "rank0_mean_s": 0.5},
            {"backend": "ray:2", "workers": 3, "rank0_mean_s": 0.5}]
    add_speedups(rows)
    assert [r["speedup_vs_pytorch"] for r in rows] == [1.0, 6.0, None]


@pytest.mark.parametrize("field, value, flag", [
    ("workers", "2,x", "--workers"), ("workers", "0,2", "--workers"), ("backends", "ray", "--backends"),
    ("backends", "local:2", "--backends"), ("backends", "faiss", "--backends"),
    ("backends", "local,local", "--backends"),
    ("index_type", "lsh", "--index_type"), ("steps", 0, "--steps"), ("n_docs", 10**7, "--n_docs"),
    ("step_time", -1.0, "--step_time")])
def test_options_name_the_bad_flag(field, value, flag):
    opts = BenchOptions(**{field: value})
    with pytest.raises(RayragError, match=flag):
        opts.validate()


def test_backend_specs_parse_and_order():
    opts = BenchOptions(backends="ray-hf:4,ray:2,pytorch,local", workers="4,2,3,2")
    assert [s.label for s in opts.backend_specs()] == ["local", "pytorch", "ray:2", "ray-hf:4"]
    assert opts.worker_counts() == [2, 3, 4]
    assert [s.retrieval_processes(3) for s in opts.backend_specs()] == [3, 1, 2, 4]
