"""`rayrag bench retrieval`: a real smoke run of the benchmark (tiny index, every kind of backend, 2 rounds), and
the pieces that turn timings into the table: the critical path, medians over rounds, the floor's validity."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys

import numpy as np
import pytest

from rayrag.bench.options import BackendSpec, BenchOptions
from rayrag.bench.report import COLUMNS, SPREAD, TIMINGS, add_floor, add_speedups, make_row, markdown, round_result
from rayrag.bench.run import ids_identical, round_order
from rayrag.errors import RayragError

STEPS, WORKERS, ROUNDS, BATCH, SEED = 4, (1, 2), 2, 4, 3
BACKENDS = ("local", "pytorch-hf", "ray:2", "ray-hf:2")
"""Every architecture (local, torch.distributed, the ray pool), and both settings (rayrag's fast ones, the
reference's) on the two that serve from other processes. `pytorch` is `pytorch-hf`'s architecture with the fast
settings (test_open_service_passes_the_settings_of_each_torch_and_local_kind); left out for the suite's time."""


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
    proc = _run_cli(["bench", "retrieval", "--out", str(out), "--index_size", "2000", "--dim", "32",
                     "--workers", ",".join(map(str, WORKERS)), "--backends", ",".join(BACKENDS),
                     "--steps", str(STEPS), "--warmup_steps", "1", "--step_time", "0.01", "--floor_repeats", "1",
                     "--batch_size", str(BATCH), "--n_docs", "3", "--rounds", str(ROUNDS), "--seed", str(SEED)],
                    timeout=600)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return out, json.loads((out / "results.json").read_text()), proc


@pytest.mark.slow
def test_bench_writes_every_file_with_one_row_per_backend_and_worker_count(bench_out):
    out, res, proc = bench_out
    for name in ("results.json", "results.csv", "results.md", "results.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"machine", "command", "floor", "floors", "rows", "load_average", "round_orders"} <= set(res)
    assert res["machine"]["logical_cores"] == os.cpu_count()
    assert res["command"].startswith("rayrag bench retrieval") and "--index_size 2000" in res["command"]
    assert all(len(res["load_average"][when]) == 3 for when in ("before", "after"))
    rows = res["rows"]
    assert sorted((r["backend"], r["workers"]) for r in rows) == sorted((b, w) for b in BACKENDS for w in WORKERS)
    for r in rows:
        assert set(COLUMNS) <= set(r), set(COLUMNS) - set(r)
        assert r["calls"] == r["workers"] * STEPS and r["rounds_measured"] == ROUNDS == len(r["rounds"])
        assert [x["round"] for x in r["rounds"]] == list(range(ROUNDS))
        assert r["retrieval_processes"] == BackendSpec.parse(r["backend"]).retrieval_processes(r["workers"])
        for x in r["rounds"]:
            assert 0 < x["p50_s"] <= x["p90_s"] <= x["max_s"] and 0 < x["mean_s"] <= x["max_s"]
            assert len(x["load_average_before"]) == 3
    md = (out / "results.md").read_text()
    heads = [line for line in md.splitlines() if line.startswith("| ") and "workers |" in line]
    assert heads[0] == (f"| critical path, seconds per step (max over ranks; median of {ROUNDS} rounds, min–max) "
                        "| 1 worker | 2 workers |")
    assert heads[1] == f"| seconds per retrieval call (rank 0; median of {ROUNDS} rounds) | 1 worker | 2 workers |"
    for head in heads[:2]:  # one line per backend (+ the floor and the bound under the headline)
        block = md.split(head, 1)[1].split("\n\n", 1)[0]
        assert sum(line.startswith("| ") for line in block.splitlines()) == len(BACKENDS) + 3 * (head == heads[0])
    assert "Load average (1 / 5 / 15 min): " in md and f"{ROUNDS} round(s), interleaved" in md
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(t["backend"], int(t["workers"])) for t in table] == [(r["backend"], r["workers"]) for r in rows]
    assert [float(t["critical_mean_s"]) for t in table] == [r["critical_mean_s"] for r in rows]
    assert "results written to" in proc.stdout


@pytest.mark.slow
def test_bench_critical_path_is_the_max_over_ranks_of_each_step(bench_out):
    for r in bench_out[1]["rows"]:
        for x in r["rounds"]:
            by_rank = np.array(x["seconds_by_rank"])
            crit = np.array(x["critical_s"])
            assert by_rank.shape == (r["workers"], STEPS) and crit.shape == (STEPS,)
            assert np.array_equal(crit, by_rank.max(axis=0)) and (crit >= by_rank).all()
            assert x["critical_mean_s"] == float(crit.mean()) and x["critical_max_s"] == float(crit.max())
            assert x["rank0_mean_s"] == float(by_rank[0].mean()) and x["mean_s"] == pytest.approx(by_rank.mean())
            # max over ranks >= every rank at every step, so >= rank 0's and the all-rank figures
            assert x["critical_mean_s"] >= x["rank0_mean_s"]
            assert x["critical_p50_s"] >= x["rank0_p50_s"] and x["critical_p90_s"] >= x["rank0_p90_s"]
            assert x["critical_mean_s"] >= x["mean_s"] * (1 - 1e-12)
            if r["workers"] == 1:
                assert x["critical_mean_s"] == x["rank0_mean_s"]


@pytest.mark.slow
def test_bench_rows_are_the_median_over_rounds(bench_out):
    for r in bench_out[1]["rows"]:
        for f in TIMINGS:
            assert r[f] == statistics.median(x[f] for x in r["rounds"]), f
        for f in SPREAD:
            assert r[f + "_min"] == min(x[f] for x in r["rounds"]) <= r[f] <= max(x[f] for x in r["rounds"])
            assert r[f + "_max"] == max(x[f] for x in r["rounds"])
        assert r["index_memory_bytes"] == round(statistics.median(x["index_memory_bytes"] for x in r["rounds"]))
        assert r["critical_mean_s"] >= r["rank0_mean_s"]


@pytest.mark.slow
def test_bench_rounds_run_every_cell_once_in_a_seeded_shuffled_order(bench_out):
    res = bench_out[1]
    cells = [(BackendSpec.parse(b), w) for b in BACKENDS for w in WORKERS]
    orders = res["round_orders"]
    assert len(orders) == ROUNDS
    for rnd, order in enumerate(orders):
        assert order == [{"backend": s.label, "workers": w} for s, w in round_order(cells, SEED, rnd)]
        assert sorted((c["backend"], c["workers"]) for c in order) == sorted((s.label, w) for s, w in cells)
    assert orders[0] != orders[1]
    for r in res["rows"]:  # each round's position is where the cell stood in that round's order
        for x in r["rounds"]:
            assert orders[x["round"]][x["position"]] == {"backend": r["backend"], "workers": r["workers"]}


@pytest.mark.slow
def test_bench_every_backend_returns_the_local_ids_in_every_round(bench_out):
    rows = bench_out[1]["rows"]
    assert [r["ids_identical_to_local"] for r in rows] == [True] * len(rows)
    assert all(x["ids_identical_to_local"] is True for r in rows for x in r["rounds"])


@pytest.mark.slow
def test_bench_settings_and_architecture_are_separate(bench_out):
    settings = {r["backend"]: r["settings"] for r in bench_out[1]["rows"]}
    assert settings == {"local": "fast", "pytorch-hf": "reference", "ray:2": "fast", "ray-hf:2": "reference"}


@pytest.mark.slow
def test_bench_speedups_are_pytorch_hf_over_the_row_on_the_critical_path(bench_out):
    rows = bench_out[1]["rows"]
    ref = {r["workers"]: r for r in rows if r["backend"] == "pytorch-hf"}
    assert set(ref) == set(WORKERS)
    for r in rows:
        b = ref[r["workers"]]
        assert r["speedup_vs_pytorch_hf"] == pytest.approx(b["critical_mean_s"] / r["critical_mean_s"], rel=1e-12)
        assert r["rank0_speedup_vs_pytorch_hf"] == pytest.approx(b["rank0_mean_s"] / r["rank0_mean_s"], rel=1e-12)


@pytest.mark.slow
def test_bench_floor_at_every_worker_count_with_its_bounds_and_validity(bench_out):
    res = bench_out[1]
    floors = {int(w): f for w, f in res["floors"].items()}
    assert sorted(floors) == list(WORKERS) and res["floor"] == floors[max(WORKERS)]
    for w, f in floors.items():
        assert {"valid", "search_s", "gemm_bound_s", "stream_s", "bound_s", "beaten_by"} <= set(f)
        assert f["queries"] == w * BATCH and f["omp_wait_policy"] == "PASSIVE"
        assert f["stream_s"] > 0 and f["retrieve_s"] > 0 and f["cadence_s"] > 0 and f["gemm"]["flops_per_s"] > 0
        assert f["gemm_flops"] == 2 * 2000 * 32 * w * BATCH
        assert f["gemm_bound_s"] == f["gemm_flops"] / f["gemm"]["flops_per_s"]
        assert f["bound_s"] == max(f["gemm_bound_s"], f["stream_s"])
        best = min(f["trials"], key=lambda t: t["search_s"])
        assert f["search_s"] == best["search_s"] and f["min_s"] == best["min_s"]
        assert 0 < best["min_s"] <= best["search_s"]
        assert f["settings"] == {"threads": best["threads"], "blas_threshold": best["blas_threshold"]}
        assert {t["threads"] for t in f["trials"]} == set(range(1, os.cpu_count() + 1))
        beaten = [r["backend"] for r in res["rows"] if r["workers"] == w and r["critical_mean_s"] < f["search_s"]]
        assert f["beaten_by"] == beaten and f["valid"] == (not beaten)
        for r in res["rows"]:
            if r["workers"] == w:
                assert r["vs_floor"] == (r["critical_mean_s"] / f["search_s"] if f["valid"] else None)
    top = res["floor"]  # the largest worker count also times FAISS's default threshold
    assert {t["blas_threshold"] for t in top["trials"]} == {1, top["faiss_default_blas_threshold"]}
    assert len(top["trials"]) == 2 * os.cpu_count()
    md = (bench_out[0] / "results.md").read_text()
    assert ("floor invalid" in md) == (not all(f["valid"] for f in floors.values()))


@pytest.mark.slow
def test_bench_memory_sees_who_maps_the_index_file(bench_out):
    """local and pytorch map the index file (IO_FLAG_MMAP_IFC); the reference's actors read a private copy."""
    rows = {(r["backend"], r["workers"]): r for r in bench_out[1]["rows"]}
    for w in WORKERS:
        for b in ("local", "pytorch-hf", "ray:2"):
            assert rows[(b, w)]["mapped_index_file_bytes"] > 0, b
        assert rows[("ray-hf:2", w)]["mapped_index_file_bytes"] == 0


# ----- pieces -------------------------------------------------------------------------------------------

MEM = {"growth_bytes": 100, "index_file": 60, "passages_files": 30}


def _round(seconds: list[list[float]], rnd: int = 0, growth: int = 100) -> dict:
    ranks = [{"seconds": np.array(s)} for s in seconds]
    return round_result(ranks, memory={**MEM, "growth_bytes": growth}, round_=rnd, position=rnd, wall_s=1.0,
                        load_before=[0.0, 0.0, 0.0])


def test_round_result_takes_each_steps_max_over_ranks():
    x = _round([[0.1, 0.5, 0.2, 0.2], [0.3, 0.1, 0.2, 0.4]])
    assert x["critical_s"] == [0.3, 0.5, 0.2, 0.4]
    assert x["critical_mean_s"] == pytest.approx(0.35) and x["critical_max_s"] == 0.5
    assert x["critical_p50_s"] == pytest.approx(0.35) and x["critical_p90_s"] == pytest.approx(0.47)
    assert x["rank0_mean_s"] == pytest.approx(0.25) and x["mean_s"] == pytest.approx(0.25)
    assert x["calls"] == 8 and x["max_s"] == 0.5 and x["index_memory_bytes"] == 100


def test_make_row_takes_medians_over_rounds_and_keeps_every_round():
    rounds = [_round([[0.1, 0.1]], 0, growth=100), _round([[0.3, 0.3]], 1, growth=300),
              _round([[0.2, 0.2]], 2, growth=200)]
    for x in rounds:
        x["ids_identical_to_local"] = True
    r = make_row(BackendSpec.parse("ray-hf:2"), 1, rounds, index_bytes=100)
    assert r["critical_mean_s"] == pytest.approx(0.2) and r["critical_mean_s_min"] == pytest.approx(0.1)
    assert r["critical_mean_s_max"] == pytest.approx(0.3) and r["index_memory_bytes"] == 200
    assert r["index_copies"] == 2.0 and r["rounds"] is rounds and r["rounds_measured"] == 3
    assert r["settings"] == "reference" and r["retrieval_processes"] == 2 and r["ids_identical_to_local"] is True
    rounds[1]["ids_identical_to_local"] = False
    assert make_row(BackendSpec.parse("ray-hf:2"), 1, rounds, index_bytes=100)["ids_identical_to_local"] is False


def test_ids_identical_compares_every_rank_and_step():
    ref = [np.arange(12).reshape(2, 2, 3), np.arange(12, 24).reshape(2, 2, 3)]
    assert ids_identical([a.copy() for a in ref], ref)
    assert ids_identical([ref[0].copy()], ref)  # fewer ranks: compared rank by rank
    other = [a.copy() for a in ref]
    other[1][1, 1, 2] += 1
    assert not ids_identical(other, ref)
    assert not ids_identical(ref + [ref[0]], ref)  # a rank with no reference is not identical


def test_add_speedups_divides_pytorch_hf_by_the_row_on_the_critical_path():
    rows = [{"backend": "pytorch-hf", "workers": 2, "critical_mean_s": 3.0, "rank0_mean_s": 2.0},
            {"backend": "ray:2", "workers": 2, "critical_mean_s": 0.5, "rank0_mean_s": 0.25},
            {"backend": "pytorch", "workers": 3, "critical_mean_s": 0.5, "rank0_mean_s": 0.5}]
    add_speedups(rows)
    assert [r["speedup_vs_pytorch_hf"] for r in rows] == [1.0, 6.0, None]
    assert [r["rank0_speedup_vs_pytorch_hf"] for r in rows] == [1.0, 8.0, None]


def _floor(w: int, search_s: float) -> dict:
    return {"workers": w, "queries": 4 * w, "search_s": search_s, "min_s": search_s, "retrieve_s": search_s,
            "settings": {"threads": 1, "blas_threshold": 1}, "gemm_bound_s": 0.01, "stream_s": 0.02,
            "bound_s": 0.02, "gemm": {"m": 1, "k": 1, "n": 1, "flops_per_s": 1e9}, "omp_wait_policy": "PASSIVE",
            "exact": True, "trials": [{"threads": 1}], "n_passages": 10, "dim": 4, "index_type": "flat",
            "index_bytes": 1000}


def _row(backend: str, w: int, crit: float) -> dict:
    x = _round([[crit, crit]])
    x["ids_identical_to_local"] = True
    return make_row(BackendSpec.parse(backend), w, [x], index_bytes=1000)


def test_a_row_below_the_floor_makes_it_invalid_and_no_ratio_is_printed():
    rows = [_row("pytorch-hf", 2, 0.4), _row("ray:4", 2, 0.05), _row("ray:4", 4, 0.2)]
    floors = {2: _floor(2, 0.1), 4: _floor(4, 0.1)}
    add_speedups(rows)
    add_floor(rows, floors)
    assert floors[2]["valid"] is False and floors[2]["beaten_by"] == ["ray:4"]
    assert floors[4]["valid"] is True and floors[4]["beaten_by"] == []
    assert [r["vs_floor"] for r in rows] == [None, None, pytest.approx(2.0)]
    md = markdown(rows, floors, options={"rounds": 1})
    assert "floor invalid: ray:4 beat it" in md and "Floor invalid at 2 workers: ray:4 beat it" in md
    detail = [line for line in md.splitlines() if line.startswith("| ray:4 | fast | 2 |")]
    assert len(detail) == 1 and detail[0].endswith("| floor invalid |")
    assert [line for line in md.splitlines() if line.startswith("| ray:4 | fast | 4 |")][0].endswith("| 2.00× |")


def test_round_order_is_a_seeded_permutation_that_changes_with_the_round():
    cells = [(BackendSpec.parse(b), w) for b in ("local", "pytorch", "ray:2") for w in (2, 4)]
    orders = [round_order(cells, 0, r) for r in range(3)]
    assert all(sorted(o, key=cells.index) == cells for o in orders)
    assert orders[0] == round_order(cells, 0, 0) and orders[0] != orders[1] != orders[2]
    assert round_order(cells, 1, 0) != orders[0]


@pytest.mark.parametrize("field, value, flag", [
    ("workers", "2,x", "--workers"), ("workers", "0,2", "--workers"), ("backends", "ray", "--backends"),
    ("backends", "local:2", "--backends"), ("backends", "faiss", "--backends"),
    ("backends", "pytorch-hf:2", "--backends"), ("backends", "local,local", "--backends"),
    ("index_type", "lsh", "--index_type"), ("steps", 0, "--steps"), ("n_docs", 10**7, "--n_docs"),
    ("step_time", -1.0, "--step_time"), ("rounds", 0, "--rounds")])
def test_options_name_the_bad_flag(field, value, flag):
    opts = BenchOptions(**{field: value})
    with pytest.raises(RayragError, match=flag):
        opts.validate()


def test_backend_specs_parse_order_and_settings():
    opts = BenchOptions(backends="ray-hf:4,ray:2,pytorch-hf,pytorch,local", workers="4,2,3,2")
    specs = opts.backend_specs()
    assert [s.label for s in specs] == ["local", "pytorch", "pytorch-hf", "ray:2", "ray-hf:4"]
    assert [s.architecture for s in specs] == ["local", "pytorch", "pytorch", "ray", "ray"]
    assert [s.settings for s in specs] == ["fast", "fast", "reference", "fast", "reference"]
    assert opts.worker_counts() == [2, 3, 4]
    assert [s.retrieval_processes(3) for s in specs] == [3, 1, 1, 2, 4]
    assert [s.label for s in BenchOptions().backend_specs()] == ["local", "pytorch", "pytorch-hf", "ray:1", "ray:2",
                                                                 "ray:4", "ray-hf:4"]
    assert BenchOptions().rounds == 3


def test_open_service_passes_the_settings_of_each_torch_and_local_kind(tmp_path):
    from rayrag.bench.backends import open_service
    from rayrag.bench.index import ensure_probe_kb

    kb = ensure_probe_kb(BenchOptions(out=tmp_path, dim=8))  # 64 passages
    for name, backend, settings in (("local", "local", "fast"), ("pytorch", "pytorch", "fast"),
                                    ("pytorch-hf", "pytorch", "reference")):
        service = open_service(BackendSpec.parse(name), kb, ray_address=None)
        try:
            spec = json.loads(service.spec.to_json())
        finally:
            service.close()
        assert (spec["backend"], spec["settings"]) == (backend, settings), name
