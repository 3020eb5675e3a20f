"""2-process DDP training on CPU (gloo) through the real CLI with each retrieval backend: the same seed
gives the same loss curve whatever serves retrieval; --profile covers both ranks; the ray backend
starts and stops its own Ray instance, or joins a cluster (`ray start --head`, token auth) and
leaves none of its actors behind."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _fixtures_backends import child_env, port_closed, ray_head

pytestmark = pytest.mark.slow  # every test here trains through the CLI or runs a Ray cluster

STEPS_PER_RANK = 4  # 32 training questions / 2 ranks / batch 4, one epoch
VAL_BATCHES = 1  # 4 validation questions / 2 ranks / batch 2


def train(corpus_dir: Path, model: Path, out: Path, backend: str, *extra: str, env: dict | None = None,
          timeout: float = 400) -> subprocess.CompletedProcess:
    """`python -m rayrag train` with 2 CPU processes (DDP, gloo), --profile, seed 7."""
    args = ["train", "--data_dir", corpus_dir / "data", "--output_dir", out, "--model_name_or_path", model,
            "--do_train", "--num_train_epochs", "1", "--n_train", "32", "--train_batch_size", "4", "--n_val", "4",
            "--eval_batch_size", "2", "--val_max_target_length", "4", "--seed", "7", "--devices", "2",
            "--accelerator", "cpu", "--log_every_n_steps", "1", "--no-progress", "--profile",
            "--distributed_retriever", backend, *extra]
    proc = subprocess.run([sys.executable, "-m", "rayrag", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or child_env())
    assert proc.returncode == 0, f"rayrag train ({backend}) exited {proc.returncode}\n{proc.stderr[-6000:]}"
    return proc


def loss_curve(out: Path) -> np.ndarray:
    with open(out / "logs" / "metrics.csv", newline="") as f:
        return np.array([float(r["train_loss_step"]) for r in csv.DictReader(f) if r.get("train_loss_step")])


def check_profile(out: Path, backend: str) -> None:
    profile = json.loads((out / "retrieval_profile.json").read_text())
    assert profile["backend"] == backend
    assert sorted(profile["ranks"]) == ["0", "1"]
    for stats in profile["ranks"].values():  # every training step and validation batch, on both ranks
        assert stats["count"] == STEPS_PER_RANK + VAL_BATCHES == len(stats["seconds"])
        assert 0 < stats["p50_s"] <= stats["max_s"] < 60
    critical = profile["critical"]  # per call, the slowest rank: at least every rank's own call
    assert critical["count"] == STEPS_PER_RANK + VAL_BATCHES
    slowest = np.max([s["seconds"] for s in profile["ranks"].values()], axis=0)
    np.testing.assert_allclose(critical["mean_s"], slowest.mean())
    assert all(critical["mean_s"] >= s["mean_s"] for s in profile["ranks"].values())




@pytest.fixture(scope="module")
def run_backend(corpus_dir, tiny_rag, tmp_path_factory):
    """Train once per backend in this module (cached): backend name -> (output dir, stderr)."""
    cache: dict[str, tuple[Path, str]] = {}

    def run(backend: str, *extra: str) -> tuple[Path, str]:
        if backend not in cache:
            out = tmp_path_factory.mktemp(f"ddp-{backend}")
            proc = train(corpus_dir, tiny_rag, out, backend, *extra)
            cache[backend] = (out, proc.stderr)
        return cache[backend]

    return run


def test_ddp_local_baseline(run_backend):
    out, _ = run_backend("local")
    assert len(loss_curve(out)) == STEPS_PER_RANK
    check_profile(out, "local")


def test_ddp_pytorch_same_losses_as_local(run_backend):
    out, log = run_backend("pytorch")
    assert "pytorch retrieval: rank 0 of 2 serves the index" in log
    assert "pytorch retrieval: rank 1 of 2" in log
    check_profile(out, "pytorch")
    np.testing.assert_allclose(loss_curve(out), loss_curve(run_backend("local")[0]), rtol=1e-6)


def test_ddp_ray_local_instance_same_losses_and_stopped(run_backend):
    out, log = run_backend("ray", "--num_retrieval_workers", "2")
    started = re.findall(r"ray: started a local instance at (\S+)", log)
    assert len(started) == 1  # rank 0 started Ray once, before DDP started rank 1 ...
    pools = [m.start() for m in re.finditer(r"ray pool rayrag-\w+: 2 actors \(rayrag policy", log)]
    assert len(pools) == 1  # ... and one pool, ready before rank 1 existed:
    assert pools[0] < log.index("Initializing distributed: GLOBAL_RANK: 1")
    assert f"ray: connected to {started[0]}" in log  # rank 1 joined it
    assert f"ray: stopped the local instance at {started[0]}" in log
    assert port_closed(started[0])  # and it is gone
    check_profile(out, "ray")
    np.testing.assert_allclose(loss_curve(out), loss_curve(run_backend("local")[0]), rtol=1e-6)


def test_ddp_ray_on_running_cluster_leaves_no_actors(run_backend, corpus_dir, tiny_rag, tiny_kb, tmp_path):
    """`ray start --head` (token authentication on), then `rayrag train --ray_address HOST:PORT` with
    RAY_AUTH_MODE unset: rayrag finds the token, trains, kills its actors, leaves the cluster up.
    Then a backend joins the same cluster with `auto`."""
    with ray_head() as address:
        env = child_env()
        for var in ("RAY_AUTH_MODE", "RAY_ADDRESS"):
            env.pop(var, None)
        out = tmp_path / "run"
        proc = train(corpus_dir, tiny_rag, out, "ray", "--num_retrieval_workers", "3", "--ray_address", address,
                     env=env)
        assert f"ray: connected to {address}" in proc.stderr
        assert "started a local instance" not in proc.stderr
        check_profile(out, "ray")
        np.testing.assert_allclose(loss_curve(out), loss_curve(run_backend("local")[0]), rtol=1e-6)
        assert not port_closed(address)  # the user's cluster is still running
        code = ("import numpy as np; from rayrag.retrieval.options import RetrievalOptions\n"
                "from rayrag.retrieval.service import open_service\n"
                f"s = open_service(RetrievalOptions(kb={str(tiny_kb)!r}, backend='ray', ray_address='auto'))\n"
                "c = s.spec.connect(); r = c.retrieve(np.ones((2, c.dim), np.float32), 2)\n"
                "print(s.connection.address, s.connection.started, r.ids.shape); c.close(); s.close()")
        auto = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                              env={**env, "RAY_ADDRESS": address})
        assert auto.returncode == 0, auto.stderr[-3000:]
        assert auto.stdout.split()[-4:] == [address, "False", "(2,", "2)"]
        listed = subprocess.run(
            [str(Path(sys.executable).with_name("ray")), "list", "actors", "--address", address, "--format", "json",
             "--limit", "1000"], capture_output=True, text=True, timeout=120,
            env={**env, "RAY_AUTH_MODE": "token"})
        assert listed.returncode == 0, listed.stderr[-2000:]
        actors = [a for a in json.loads(listed.stdout) if (a.get("name") or "").startswith("rayrag-")]
        assert len(actors) == 3 + 1  # the run's pool (and the `auto` backend's) were there ...
        assert {a["state"] for a in actors} == {"DEAD"}  # ... and none of it is left
