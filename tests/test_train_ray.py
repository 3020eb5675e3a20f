"""`rayrag train --launcher ray`: the flags and the fitting arithmetic (fast); and on a three-node
`ray.cluster_utils.Cluster` on this machine (slow): two Ray Train workers on two nodes with the retrieval pool on
the third, one worker SIGKILLed after the first checkpoint reached Ray Train, restarted from it, and the run ends
with every optimizer step once and the loss curve of a `--devices 2` run; a job the cluster cannot hold is refused
with the fix instead of waiting for CPUs.

One cluster (module scope) and one killed run serve the slow tests, to keep them within the suite's budget."""

from __future__ import annotations

import contextlib
import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from _fixtures_backends import child_env
from conftest import three_node_cluster
from rayrag.cluster.args import ClusterArgs
from rayrag.errors import RayragError
from rayrag.train.options import TrainOptions
from rayrag.cluster.fit import refusal as cluster_refusal
from rayrag.train.ray_launch import RUN_NAME

# ----- fast tier: flags, worker count, what fits ------------------------------------------------------------


def _opts(tmp_path: Path, cluster: ClusterArgs | None = None, **kw) -> TrainOptions:
    return TrainOptions(data_dir=tmp_path / "data", output_dir=tmp_path / "out", model_name_or_path=tmp_path / "m",
                        do_train=True, cluster=cluster or ClusterArgs(), **kw)


@pytest.mark.parametrize("flags, message", [
    ({"cluster": ClusterArgs(use_gpu=True)}, "--cluster.use_gpu applies to --launcher ray"),
    ({"cluster": ClusterArgs(cpus_per_worker=1.0)}, "--cluster.cpus_per_worker applies to --launcher ray"),
    ({"max_failures": 0}, "--max_failures applies to --launcher ray"),
    ({"launcher": "ray", "cluster": ClusterArgs(cpus_per_worker=0.0)},
     "--cluster.cpus_per_worker 0.0: must be more than 0"),
    ({"launcher": "ray", "max_failures": -2}, "--max_failures -2: must be at least -1"),
    ({"launcher": "ray", "num_nodes": 2}, "--num_nodes 2: with --launcher ray, Ray places the workers"),
    ({"launcher": "ray", "cluster": ClusterArgs(use_gpu=True), "accelerator": "cpu"},
     "--cluster.use_gpu contradicts --accelerator cpu"),
    ({"launcher": "ray", "num_workers": 2, "devices": 3}, "--num_workers 2 and --devices 3"),
])
def test_launcher_flags_are_checked(tmp_path, flags, message):
    with pytest.raises(RayragError, match=re.escape(message)):
        _opts(tmp_path, **flags).validate()


def test_worker_count_comes_from_the_cluster_part_then_num_workers_then_devices_then_gpus(tmp_path):
    assert _opts(tmp_path, launcher="ray", cluster=ClusterArgs(workers=2), devices=2).resolved().cluster.workers == 2
    assert _opts(tmp_path, launcher="ray", num_workers=3).resolved().cluster.workers == 3
    assert _opts(tmp_path, launcher="ray", devices=2).resolved().cluster.workers == 2
    gpus = _opts(tmp_path, launcher="ray", gpus=4).resolved()  # the reference's --gpus 4: 4 workers, one GPU each
    assert (gpus.cluster.workers, gpus.cluster.use_gpu) == (4, True)
    assert _opts(tmp_path, launcher="ray").resolved().cluster == ClusterArgs(workers=1, cpus_per_worker=0.5)
    assert _opts(tmp_path, devices=2, gpus=2).resolved().cluster == ClusterArgs()  # the local launcher asks Ray nothing


def test_refusal_names_the_flag_and_what_fits(tmp_path):
    nodes = [{"CPU": 0.0}, {"CPU": 1.0}, {"CPU": 1.0}]
    def resolved(**kw):
        return _opts(tmp_path, launcher="ray", **kw).resolved()

    def refusal(opts, nodes, where):  # what fit_on_ray asks of the cluster for these options
        c = opts.cluster
        return cluster_refusal(nodes, c.workers, c.cpus_per_worker, c.use_gpu, where=where, what="training workers")

    assert refusal(resolved(cluster=ClusterArgs(workers=2, cpus_per_worker=0.75)), nodes, "here") is None
    why = refusal(resolved(cluster=ClusterArgs(workers=3, cpus_per_worker=0.75)), nodes, "here")
    assert why.startswith("--cluster.workers 3: the Ray cluster at here cannot hold 3 training workers of 0.75 CPU")
    assert "room for 2" in why and "lower --cluster.workers to 2" in why and "--cluster.cpus_per_worker 0.5" in why
    why = refusal(resolved(devices=2, cluster=ClusterArgs(use_gpu=True)), nodes, "here")
    assert why.startswith("--cluster.workers 2:") and "room for 0" in why and "drop --cluster.use_gpu" in why


def test_tune_refuses_the_ray_launcher(tmp_path):
    from rayrag.tune.options import TuneOptions

    with pytest.raises(RayragError, match=re.escape("--launcher ray: Ray Tune starts the trials")):
        TuneOptions(_opts(tmp_path, launcher="ray")).validate()


def test_a_failed_run_is_told_in_one_line():
    from rayrag.train.ray_launch import _cause

    report = ("Training failed due to worker errors:\n[Rank 0 Error Snippet]:\nA worker health check failed.\n"
              "Worker info: Worker(...)")
    assert _cause(RuntimeError(report)) == "A worker health check failed."
    report = ("Training failed due to worker errors:\n[Rank 1 Error Snippet]:\nTraceback (most recent call last):\n"
              '  File "x.py", line 1, in f\nrayrag.errors.RetrievalError: the pool is gone\n')
    assert _cause(RuntimeError(report)) == "rayrag.errors.RetrievalError: the pool is gone"


def test_the_report_reuses_the_file_a_model_checkpoint_wrote_at_that_step(tmp_path):
    """ReportCheckpoint's choice, in one in-process Trainer: at a step where a ModelCheckpoint wrote (every 2 steps
    here) the file of that step is found and reported; at other steps none is, and the report saves one itself."""
    import lightning as L
    import torch

    from rayrag.train.ray_launch import _file_written_at
    from rayrag.train.run import Job, build_trainer

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    seen = {}

    class Look(L.pytorch.callbacks.Checkpoint):  # listed where ReportCheckpoint is: after the ModelCheckpoints
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            written = _file_written_at(trainer, step)
            seen[step] = (written is not None, written)

    opts = _opts(tmp_path, max_steps=5, save_every_n_steps=2, val_check_interval=1000.0, progress=False)
    trainer = build_trainer(Job(opts, info=None, kb=None), callbacks=[Look()])
    trainer.fit(Tiny(), torch.utils.data.DataLoader(torch.randn(5, 2), batch_size=1))
    assert {s: saved for s, (saved, _) in seen.items()} == {1: False, 2: True, 3: False, 4: True, 5: False}
    for step in (2, 4):
        path = seen[step][1]
        assert path is not None and path.name == "last.ckpt"
    assert seen[1][1] is None and seen[3][1] is None
    assert torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4


# ----- slow tier: a three-node cluster on this machine ----------------------------------------------------------

STEPS = 8  # 64 training questions / 2 workers / batch 4, one epoch
CHECKPOINT_EVERY = 2
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled"}  # the Cluster below runs without authentication (see test_index_ray)


@pytest.fixture(scope="module")
def cluster():
    """A head with no CPUs and the custom resource `retrieval` (the pool's node), and two nodes of one CPU each."""
    with three_node_cluster({"retrieval": 1}) as c:
        yield c


def _raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def _actors_by_node(cluster, name: str) -> dict[str, list[psutil.Process]]:
    """The live processes of actor class `name` under each node's raylet (node: 'head' or 'worker-K')."""
    nodes = {"head": cluster.head_node, **{f"worker-{i}": n for i, n in enumerate(
        sorted(cluster.worker_nodes, key=lambda n: n.unique_id))}}
    found: dict[str, list[psutil.Process]] = {}
    for label, node in nodes.items():
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(_raylet_pid(node)).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if f"ray::{name}" in " ".join(p.cmdline()):
                        found.setdefault(label, []).append(p)
    return found


def _train_args(corpus_dir: Path, model: Path, out: Path, *extra) -> list[str]:
    return ["train", "--data_dir", corpus_dir / "data", "--output_dir", out, "--model_name_or_path", model,
            "--do_train", "--num_train_epochs", "1", "--n_train", "64", "--train_batch_size", "4", "--n_val", "4",
            "--eval_batch_size", "2", "--val_max_target_length", "4", "--seed", "7", "--accelerator", "cpu",
            "--log_every_n_steps", "1", "--no-progress", "--save_every_n_steps", str(CHECKPOINT_EVERY), *extra]


def _log_rows(out: Path) -> list[dict]:
    with open(out / "logs" / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("train_loss_step")]


@pytest.fixture(scope="module")
def ddp_run(corpus_dir, tiny_rag, tmp_path_factory) -> Path:
    """The same training with `--devices 2` (Lightning's DDP, gloo), the baseline."""
    out = tmp_path_factory.mktemp("ddp2")
    proc = subprocess.run([sys.executable, "-m", "rayrag", *map(str, _train_args(corpus_dir, tiny_rag, out,
                                                                                 "--devices", "2"))],
                          capture_output=True, text=True, timeout=300, env=child_env())
    assert proc.returncode == 0, proc.stderr[-5000:]
    return out


def _registered_checkpoint(out: Path) -> bool:
    """Whether Ray Train's controller has registered a checkpoint of the run: its snapshot (written after each
    registration) names a latest checkpoint. A checkpoint directory alone is not enough: a worker killed between the
    upload and the registration restarts from the checkpoint before."""
    snapshot = out / RUN_NAME / "checkpoint_manager_snapshot.json"
    try:
        return json.loads(snapshot.read_text()).get("latest_checkpoint_result") is not None
    except (OSError, ValueError):  # not written yet, or being written
        return False


@pytest.fixture(scope="module")
def killed_run(cluster, corpus_dir, tiny_rag, tmp_path_factory):
    """`rayrag train --launcher ray` on the cluster: 2 workers of 0.75 CPU (so one per worker node), a pool of one
    actor pinned to the head by `retrieval`. Once Ray Train has registered the first checkpoint, one worker is
    SIGKILLed. Returns (output dir, stderr, {node: pids} of the workers and of the pool seen before the kill,
    killed pid, seconds)."""
    out = tmp_path_factory.mktemp("launcher-ray")
    args = _train_args(corpus_dir, tiny_rag, out, "--launcher", "ray", "--num_workers", "2", "--cpus_per_worker",
                       "0.75", "--max_failures", "2", "--ray_address", cluster.address, "--distributed_retriever",
                       "ray", "--num_retrieval_workers", "1", "--pool.resources", '{"retrieval": 0.01}', "--profile")
    log = out.parent / f"{out.name}.log"
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "rayrag", *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=f, env=child_env(**CLUSTER_ENV), start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        workers: dict = {}
        pool: dict = {}
        while not _registered_checkpoint(out):
            assert proc.poll() is None, f"exited {proc.returncode} before a checkpoint\n{log.read_text()[-5000:]}"
            assert time.monotonic() < deadline, f"no registered checkpoint after 240 s\n{log.read_text()[-5000:]}"
            workers = _actors_by_node(cluster, "RayTrainWorker") or workers
            pool = _actors_by_node(cluster, "RetrievalActor") or pool
            time.sleep(0.05)
        workers = _actors_by_node(cluster, "RayTrainWorker")
        victim = next(p for ps in workers.values() for p in ps)
        victim.kill()  # SIGKILL: no cleanup runs
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    seen = ({k: [p.pid for p in v] for k, v in workers.items()}, {k: [p.pid for p in v] for k, v in pool.items()})
    stderr = log.read_text()
    assert proc.returncode == 0, stderr[-6000:]
    return out, stderr, seen, victim.pid, time.monotonic() - t0


@pytest.mark.slow
def test_workers_on_two_nodes_and_the_pool_on_the_third(killed_run):
    out, _, (workers, pool), _, _ = killed_run
    assert sorted(workers) == ["worker-0", "worker-1"] and all(len(v) == 1 for v in workers.values()), workers
    assert list(pool) == ["head"] and len(pool["head"]) == 1, pool


@pytest.mark.slow
def test_a_killed_worker_is_restarted_from_the_checkpoint_and_no_step_is_lost_or_repeated(killed_run):
    out, stderr, _, victim, seconds = killed_run
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    resumed = re.findall(r"continuing from the checkpoint reported to Ray Train, \S+", stderr)
    assert len(resumed) == 1, stderr[-6000:]  # one restart, from Ray Train's storage
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == STEPS
    assert [int(r["step"]) for r in _log_rows(out)] == list(range(STEPS))  # every step logged once, in order
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "best_model/config.json", "config.yaml",
                 "retrieval_profile.json"):
        assert (out / name).is_file(), name
    print(f"launcher ray, killed once: {seconds:.0f} s")


@pytest.mark.slow
def test_losses_equal_the_devices_2_run(killed_run, ddp_run):
    out = killed_run[0]
    ours = [float(r["train_loss_step"]) for r in _log_rows(out)]
    theirs = [float(r["train_loss_step"]) for r in _log_rows(ddp_run)]
    assert len(ours) == len(theirs) == STEPS
    # Every loss equal, bit for bit, before and after the restart: the same batches, the same float operations, and
    # each rank's own RNG state restored (the question encoder's dropout draws from it). Before rank-wise RNG states
    # went into the checkpoint, rank 1 restored rank 0's, drew other dropout masks, and the losses after the
    # restart were off by 5e-6 to 3e-4 relative.
    assert ours == theirs
    ray_metrics = json.loads((out / "metrics.json").read_text())
    assert ray_metrics["best_val_em"] == json.loads((ddp_run / "metrics.json").read_text())["best_val_em"]


@pytest.mark.slow
def test_a_job_the_cluster_cannot_hold_is_refused_with_the_fix(cluster, corpus_dir, tiny_rag, tmp_path):
    t0 = time.monotonic()
    args = _train_args(corpus_dir, tiny_rag, tmp_path / "out", "--launcher", "ray", "--num_workers", "3",
                       "--cpus_per_worker", "0.75", "--ray_address", cluster.address)
    proc = subprocess.run([sys.executable, "-m", "rayrag", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=child_env(**CLUSTER_ENV))
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert "--cluster.workers 3: the Ray cluster at" in error and "room for 2" in error, error
    assert "lower --cluster.workers to 2" in error and "--cluster.cpus_per_worker 0.5" in error, error
    assert time.monotonic() - t0 < 60  # refused, not left waiting for CPUs
