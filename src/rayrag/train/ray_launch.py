"""`rayrag train --launcher ray`: the same Lightning training, run by Ray Train's `TorchTrainer` on a Ray cluster.

    driver (`rayrag train` on the head node)
      join Ray (--ray_address) ─► refuse a job the cluster cannot hold ─► open the retrieval service ─► spec
      └─ TorchTrainer(worker_loop, ScalingConfig(workers, CPUs/GPU each), RunConfig(OUTPUT_DIR/ray_train,
                      FailureConfig(--max_failures))).fit()
           each worker: `train()` with Ray Train's Lightning integration (RayDDPStrategy, RayLightningEnvironment,
           prepare_trainer), attached to the service by its spec; a checkpoint reported to Ray Train every
           --save_every_n_steps steps and at every validation; after a worker dies Ray Train restarts them all
           and they continue from the last reported checkpoint (`ray.train.get_checkpoint`)
      close the service (ray: kill the pool) ─► disconnect ─► `train()` goes on: --do_predict, metrics.json

Worker rank 0 writes what `rayrag train` writes (checkpoints/{best,last}.ckpt, best_model/, logs/, the profile) to
--output_dir, so every path is made absolute here (Ray Train workers run in a directory of their own) and must be
one every node can read. A run without --resume starts Ray Train's record (OUTPUT_DIR/ray_train) over; with --resume,
Ray Train restores it and the workers continue from its latest checkpoint (or from checkpoints/last.ckpt when it has
none).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from rayrag.errors import RayragError
from rayrag.train.options import TrainOptions
from rayrag.retrieval.service import serving
from rayrag.train.run import Job, build_trainer, export, finish, fit, prepare, retrieval_request

log = logging.getLogger(__name__)

RUN_NAME = "ray_train"
"""Ray Train's record of the run (its checkpoints and their index), in --output_dir."""
CHECKPOINT_FILE = "checkpoint.ckpt"
"""The Lightning checkpoint inside each checkpoint directory reported to Ray Train (as Ray's own callback names it)."""


def train_on_ray(opts: TrainOptions) -> dict:
    """`rayrag train --launcher ray`: prepare the run here with every path absolute (Ray Train's workers do not run
    in the driver's directory), fit it with Ray Train (`fit_on_ray`), then predict here; returns what it writes to
    metrics.json."""
    job = prepare(opts.absolute())
    metrics = fit_on_ray(job) if job.opts.do_train else {}
    return finish(job, metrics)


def _resources(opts: TrainOptions) -> dict[str, float]:
    return {"CPU": opts.cluster.cpus_per_worker, **({"GPU": 1.0} if opts.cluster.use_gpu else {})}


class ReportCheckpoint(Checkpoint):
    """Reports a checkpoint of the run to Ray Train every `every_n_steps` optimizer steps (0: never by steps) and
    after every validation, with the Trainer's logged metrics and `step`. Every worker reports (Ray Train waits for
    all); rank 0's checkpoint is the one kept, in Ray Train's storage (RunConfig.storage_path). A `Checkpoint`
    callback listed after the ModelCheckpoints, so that Lightning runs it after them: the state it reports at a
    validation includes that validation's best score, and when one of them has just written the state of this step
    (last.ckpt every --save_every_n_steps steps, best.ckpt or last.ckpt at a validation) that file is reported, linked
    into the reported directory, instead of saving the same state a second time."""

    def __init__(self, every_n_steps: int):
        self.every_n_steps = every_n_steps
        self._reported_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self._report(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._report(trainer)

    def _report(self, trainer: L.Trainer) -> None:
        import ray.train

        step = int(trainer.global_step)
        if step == self._reported_step:  # one report per step (a validation right after a step's report)
            return
        self._reported_step = step
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        metrics.update(step=step, epoch=int(trainer.current_epoch))
        written = _file_written_at(trainer, step) if trainer.is_global_zero else None
        saved = trainer.strategy.broadcast(written is not None)  # rank 0 wrote this step's state: all ranks agree
        with tempfile.TemporaryDirectory(prefix=".rayrag-report-", dir=written.parent if written else None) as tmp:
            target = Path(tmp) / CHECKPOINT_FILE
            if written is not None:
                _link_or_copy(written, target)
            elif not saved:
                trainer.save_checkpoint(target)  # every rank takes part; rank 0 writes
            checkpoint = ray.train.Checkpoint.from_directory(tmp) if trainer.is_global_zero else None
            ray.train.report(metrics, checkpoint=checkpoint)
        log.info("reported the checkpoint of step %d to Ray Train (%s)", step,
                 f"{written.name}, written at this step" if written else "saved for the report")


def _file_written_at(trainer: L.Trainer, step: int) -> Path | None:
    """The file this process's checkpoint IO wrote at `step` (rank 0 writes them), if it is there."""
    last = getattr(trainer.strategy.checkpoint_io, "last_saved", None)
    return last[1] if last is not None and last[0] == step and last[1].is_file() else None


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (the checkpoint files are replaced by rename, never rewritten in place), or a copy across
    file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def worker_loop(config: dict) -> None:
    """One Ray Train worker: the run's steps (prepare, fit, and on rank 0 export) with Ray Train's Lightning
    integration, continuing from the checkpoint Ray Train hands back after a restart (or a restored run), attached
    to the driver's retrieval service. Rank 0 writes its metrics to OUTPUT_DIR/metrics.json, where the driver reads
    them."""
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    job = prepare(config["opts"], config=False)  # the driver wrote config.yaml
    trainer = prepare_trainer(build_trainer(
        job, callbacks=[ReportCheckpoint(job.opts.save_every_n_steps)],
        strategy=RayDDPStrategy(find_unused_parameters=True), plugins=[RayLightningEnvironment()]))
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext() as restored:
        ckpt = Path(restored) / CHECKPOINT_FILE if restored is not None else None
        if ckpt is not None and ray.train.get_context().get_world_rank() == 0:
            log.warning("ray train: continuing from the checkpoint reported to Ray Train, %s", ckpt)
        fitted = fit(job, trainer, config["spec"], ckpt_path=ckpt)
    if trainer.is_global_zero:
        finish(job, export(job, fitted))


def _worker_options(opts: TrainOptions) -> TrainOptions:
    """What each worker runs: training alone (the driver predicts), its batches loaded in-process (--num_workers is
    the worker count here), one device of the kind Ray gives it."""
    return dataclasses.replace(opts, do_predict=False, num_workers=0, gpus=None,
                               accelerator="gpu" if opts.cluster.use_gpu else "cpu")


def fit_on_ray(job: Job) -> dict:
    """Train `job` (prepared with absolute paths) with Ray Train; returns rank 0's training metrics (train_seconds,
    train_steps, best_val_em), which it wrote to OUTPUT_DIR/metrics.json."""
    from rayrag.cluster import check_fits, connect

    opts, out = job.opts, job.out
    record = out / RUN_NAME
    if not opts.resume and record.exists():  # a new run: Ray Train would otherwise restore the old one
        shutil.rmtree(record)
    written = out / "metrics.json"
    written.unlink(missing_ok=True)
    n = opts.cluster.workers
    connection = connect(opts.cluster.address)
    try:
        # Ray only now: it reads its configuration (token authentication) when first imported, which `connect` set
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        check_fits(opts.cluster.workers, opts.cluster.cpus_per_worker, opts.cluster.use_gpu,
                   where=connection.address, what="training workers")  # Ray would wait for workers that cannot fit
        with serving(retrieval_request(job)) as spec:  # opened before any worker starts; closed after the last
            trainer = TorchTrainer(
                worker_loop, train_loop_config={"opts": _worker_options(opts), "spec": spec},
                torch_config=TorchConfig(backend="nccl" if opts.cluster.use_gpu else "gloo"),
                scaling_config=ScalingConfig(num_workers=n, use_gpu=opts.cluster.use_gpu,
                                             resources_per_worker=_resources(opts)),
                run_config=RunConfig(name=RUN_NAME, storage_path=str(out),
                                     failure_config=FailureConfig(max_failures=opts.max_failures),
                                     checkpoint_config=CheckpointConfig(num_to_keep=2)))
            log.info("ray train: %d workers of %s at %s; checkpoints in %s", n, _resources(opts),
                     connection.address, record)
            _fit(trainer, opts)
    finally:
        connection.close()
    if not written.is_file():
        raise RayragError(f"--launcher ray: worker rank 0 wrote no {written}: is --output_dir on storage this node "
                          "shares with the workers' nodes?")
    return json.loads(written.read_text())


def _fit(trainer, opts: TrainOptions):
    from ray.train import TrainingFailedError

    try:
        return trainer.fit()
    except TrainingFailedError as e:
        raise RayragError(f"--launcher ray: training failed after --max_failures {opts.max_failures} restarts "
                          f"({_cause(e)}); the workers' logs are above; fix the cause and rerun with --resume to "
                          "continue from the last checkpoint") from None


def _cause(error: Exception) -> str:
    """One line of Ray Train's error report: the last exception line of a worker's traceback, else its first line
    that is no header ('Training failed due to worker errors:', '[Rank 0 Error Snippet]:')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    raised = [line for line in lines
              if re.match(r"[\w.]*(Error|Exception)\b", line) and "WorkerGroupError" not in line]
    if raised:
        return raised[-1]
    return next((line for line in lines if not line.endswith(":") and not line.startswith("[")), type(error).__name__)
