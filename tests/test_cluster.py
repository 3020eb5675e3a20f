"""Reaching Ray (`rayrag.cluster`): the fit check's arithmetic and message, token authentication decided before Ray
reads it, a local instance on 127.0.0.1 only, and every verb that connects run against one `ray start --head`
cluster with its token authentication (train, tune, index --ray, bench), as a user starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import pytest

from conftest import rayrag, user_cluster
from rayrag.cluster import refusal, workers_that_fit
from rayrag.cluster.auth import AUTH_MODE_ENV, use_token_auth

# ---------------------------------------------------------------- fast


def test_refusal_names_the_verbs_flags_and_what_fits():
    nodes = [{"CPU": 0.0}, {"CPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]
    assert workers_that_fit(nodes, 0.5, 0.0) == 4 and workers_that_fit(nodes, 0.5, 1.0) == 1
    assert refusal(nodes, 2, 0.75, False, where="here") is None
    why = refusal(nodes, 3, 0.75, False, where="here", what="encoder workers", worker_flag="--cluster.workers",
                  cpus_flag="--cluster.cpus_per_worker")
    assert why == ("--cluster.workers 3: the Ray cluster at here cannot hold 3 encoder workers of 0.75 CPU each (its 3 "
                   "node(s): 0 CPU, 1 CPU, 1 CPU; room for 2); lower --cluster.workers to 2, or ask for less with "
                   "--cluster.cpus_per_worker 0.5, or add nodes to the cluster")
    why = refusal(nodes, 2, 1.0, True, where="here", worker_flag="--devices")
    assert why.startswith("--devices 2: ") and "of 1 CPU and 1 GPU each" in why and "room for 1" in why
    assert "lower --devices to 1, or drop --cluster.use_gpu, or add nodes" in why


def test_token_mode_is_set_for_an_explicit_address_and_left_to_ray_for_auto(tmp_path, monkeypatch):
    """Ray turns token mode on by itself for `auto` (even after it was imported), and only if RAY_AUTH_MODE is unset
    then: rayrag sets it for HOST:PORT only, and never overrides the user's choice."""
    env = {k: v for k, v in os.environ.items() if k not in (AUTH_MODE_ENV, "RAY_ADDRESS", "RAY_AUTH_TOKEN",
                                                            "RAY_AUTH_TOKEN_PATH")}
    monkeypatch.setattr(os, "environ", {**env, "HOME": str(tmp_path)})  # this test's copy: nothing leaks out
    assert use_token_auth("127.0.0.1:6379") is False  # no token anywhere: nothing to turn on
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t")
    assert use_token_auth("auto") is True and AUTH_MODE_ENV not in os.environ
    os.environ["RAY_ADDRESS"] = "127.0.0.1:6379"  # `auto` that Ray resolves to an explicit address
    assert use_token_auth("auto") is True and os.environ[AUTH_MODE_ENV] == "token"
    os.environ[AUTH_MODE_ENV] = "disabled"
    assert use_token_auth("127.0.0.1:6379") is False


def test_the_verbs_that_connect_import_no_ray_before_connecting():
    """Ray reads its configuration when first imported: the modules of the verbs that connect leave it unimported
    (they import it after `connect`), so that `connect` can still choose token mode and loopback."""
    modules = ["rayrag.cli.main", "rayrag.cluster", "rayrag.retrieval.ray.service", "rayrag.retrieval.ray.client",
               "rayrag.train.ray_launch", "rayrag.tune.search", "rayrag.kb.ray_embed", "rayrag.bench.run"]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('ray' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False"]


LOOPBACK = """
import json, psutil
from rayrag.cluster import connect
c = connect(None, log_to_driver=False)
import ray
listening = sorted({s.laddr.ip for p in psutil.Process().children(recursive=True)
                    for s in p.net_connections(kind="inet") if s.status == psutil.CONN_LISTEN})
print(json.dumps({"gcs": c.address, "started": c.started, "nodes": [n["NodeManagerAddress"] for n in ray.nodes()],
                  "listening": listening}))
c.close()
"""


@pytest.mark.slow
def test_a_local_instance_rayrag_starts_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    proc = subprocess.run([sys.executable, "-c", LOOPBACK], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["started"] and got["gcs"].startswith("127.0.0.1:") and got["nodes"] == ["127.0.0.1"], got
    assert got["listening"] and set(got["listening"]) <= {"127.0.0.1", "::ffff:127.0.0.1"}, got


# ---------------------------------------------------------------- slow: every verb on a `ray start --head` cluster


@pytest.fixture(scope="module")
def head():
    """One `ray start --head` cluster (token authentication on, 2 CPUs, 127.0.0.1) for every verb of this module."""
    with user_cluster(num_cpus=2) as cluster:
        yield cluster


def _run(head, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`rayrag ARGS` as the cluster's user runs it (their HOME and token, RAY_AUTH_MODE unset)."""
    return rayrag(*args, env=head.env, timeout=timeout)


def _joined(proc: subprocess.CompletedProcess, head) -> None:
    """The command joined the cluster and started no Ray of its own."""
    assert f"ray: connected to {head.address}" in proc.stderr, proc.stderr[-3000:]
    assert "started a local instance" not in proc.stderr


TRAIN = ["--num_train_epochs", "1", "--n_train", "8", "--train_batch_size", "4", "--n_val", "2", "--eval_batch_size",
         "2", "--val_max_target_length", "4", "--max_target_length", "6", "--accelerator", "cpu", "--no-progress",
         "--distributed_retriever", "ray", "--num_retrieval_workers", "1"]


# `rayrag train` on a `ray start --head` token cluster: tests/test_ddp_retrieval.py's running-cluster test (HOST:PORT,
# RAY_AUTH_MODE unset, then `auto` for a backend).


@pytest.mark.slow
def test_ask_retrieves_through_a_pool_on_the_cluster_as_it_does_locally(head, corpus_dir, tiny_rag):
    """`ask --distributed_retriever ray --ray_address auto`: the model retrieves through a pool of actors on the
    cluster, and answers with the same passages, scores and answer as with its index in the process."""
    question = (corpus_dir / "data" / "test.source").read_text().splitlines()[0]
    local = rayrag("ask", "--model", tiny_rag, "--json", question, "--quiet")
    pooled = _run(head, "ask", "--model", tiny_rag, "--json", question, "--distributed_retriever", "ray",
                  "--ray_address", "auto")
    _joined(pooled, head)
    assert json.loads(pooled.stdout.splitlines()[0]) == json.loads(local.stdout.splitlines()[0])


@pytest.mark.slow
def test_tune_joins_the_cluster_with_auto(head, corpus_dir, tiny_rag, tmp_path):
    """The reported failure: `rayrag tune --ray_address auto` on a token cluster (InvalidAuthToken). The trial
    attaches to the search's pool on the cluster."""
    out = tmp_path / "search"
    proc = _run(head, "tune", "--data_dir", corpus_dir / "data", "--output_dir", out, "--model_name_or_path",
                tiny_rag, *TRAIN, "--max_steps", "2", "--val_check_interval", "2", "--search.learning_rate",
                "grid:1e-3", "--num_samples", "1", "--scheduler", "fifo", "--cpus_per_trial", "1",
                "--ray_address", "auto")
    _joined(proc, head)
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 2 and ",finished," in rows[1], rows


@pytest.mark.slow
def test_index_ray_joins_the_cluster_by_its_address(head, corpus_dir, tmp_path):
    """HOST:PORT: Ray never turns token mode on by itself there; rayrag does, before Ray is imported."""
    proc = _run(head, "index", "--docs", corpus_dir / "documents.jsonl", "--out", tmp_path / "kb", "--encoder",
                "tiny", "--ray", "--num_workers", "1", "--cpus_per_worker", "1", "--ray_address", head.address)
    _joined(proc, head)
    assert "embedded" in proc.stdout and "with 1 Ray worker" in proc.stdout, proc.stdout
    assert json.loads((tmp_path / "kb" / "manifest.json").read_text())["n_passages"] > 0


@pytest.mark.slow
def test_bench_joins_the_cluster_and_reads_the_services_own_counters(head, tmp_path):
    out = tmp_path / "bench"
    proc = _run(head, "bench", "retrieval", "--out", out, "--index_size", "200", "--dim", "16", "--workers", "1",
                "--backends", "local,ray:1", "--steps", "2", "--warmup_steps", "1", "--step_time", "0",
                "--floor_repeats", "1", "--batch_size", "2", "--n_docs", "2", "--rounds", "1", "--ray_address", "auto")
    _joined(proc, head)
    rows = {r["backend"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    ray_round = rows["ray:1"]["rounds"][0]
    assert ray_round["ids_identical_to_local"] is True
    assert [s["calls"] for s in ray_round["backend_stats"]] == [3]  # the warm-up and the 2 timed steps
    assert rows["local"]["rounds"][0]["backend_stats"] is None
    assert rows["ray:1"]["mapped_index_file_bytes"] > 0  # the actor's share, measured with the probe's baseline
