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
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from rayrag.errors import RayragError
from rayrag.kb.layout import KbLocation
from rayrag.train.options import TrainOptions
from rayrag.train.run import Launched, retrieval_service, train

log = logging.getLogger(__name__)

RUN_NAME = "ray_train"
"""Ray Train's record of the run (its checkpoints and their index), in --output_dir."""
CHECKPOINT_FILE = "checkpoint.ckpt"
"""The Lightning checkpoint inside each checkpoint directory reported to Ray Train (as Ray's own callback names it)."""


def train_on_ray(opts: TrainOptions) -> dict:
    """`rayrag train --launcher ray`: `train()` with its paths made absolute and its fit run by Ray Train
    (`fit_on_ray`); returns what it writes to metrics.json."""
    return train(absolute(opts), fit_elsewhere=fit_on_ray)


def absolute(opts: TrainOptions) -> TrainOptions:
    """`opts` with every path absolute: Ray Train's workers do not run in the driver's directory. (A model name that
    is no local path stays as it is.)"""
    paths = {f.name: value.resolve() for f in dataclasses.fields(opts)
             if isinstance(value := getattr(opts, f.name), Path)
             and (f.name != "model_name_or_path" or value.exists())}
    return dataclasses.replace(opts, **paths)


def _resources(opts: TrainOptions) -> dict[str, float]:
    return {"CPU": opts.cpus_per_worker, **({"GPU": 1.0} if opts.use_gpu else {})}


def check_fits(opts: TrainOptions, where: str) -> None:
    """Refuse, with the fix, a job whose workers the cluster's live nodes cannot hold: Ray would wait for them."""
    import ray

    problem = refusal(opts, [node["Resources"] for node in ray.nodes() if node.get("Alive")], where)
    if problem:
        raise RayragError(problem)


def refusal(opts: TrainOptions, nodes: list[dict], where: str) -> str | None:
    """Why the workers of `opts` cannot all be placed on `nodes` (each a dict of total resources, as
    `ray.nodes()[i]["Resources"]`), with the flags that fix it; None when they fit."""
    from rayrag.kb.ray_embed import workers_that_fit

    n = opts.ray_workers()
    gpus = 1.0 if opts.use_gpu else 0.0
    fit = workers_that_fit(nodes, opts.cpus_per_worker, gpus)
    if fit >= n:
        return None
    flag = "--num_workers" if opts.num_workers > 0 else "--devices"
    have = ", ".join(f"{r.get('CPU', 0):g} CPU" + (f" {r.get('GPU', 0):g} GPU" if gpus else "") for r in nodes)
    fixes = [f"lower {flag} to {fit}"] if fit > 0 else []
    if not gpus:  # the largest request with which every worker fits: some node's CPUs split k ways
        cpus = max((c for r in nodes for k in range(1, n + 1)
                    if (c := math.floor(r.get("CPU", 0.0) / k * 100) / 100) > 0
                    and workers_that_fit(nodes, c, 0.0) >= n), default=None)
        if cpus is not None:
            fixes.append(f"ask for less with --cpus_per_worker {cpus:g}")
    else:
        fixes.append("drop --use_gpu")
    fixes.append("add nodes to the cluster")
    ask = f"{opts.cpus_per_worker:g} CPU" + (" and 1 GPU" if gpus else "")
    return (f"{flag} {n}: the Ray cluster at {where} cannot hold {n} training workers of {ask} each "
            f"(its {len(nodes)} node(s): {have}; room for {fit}); " + ", or ".join(fixes))


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
        saved = saved_at(trainer, step)
        written = _file_written_at(trainer, step) if saved and trainer.is_global_zero else None
        with tempfile.TemporaryDirectory(prefix=".rayrag-report-", dir=written.parent if written else None) as tmp:
            target = Path(tmp) / CHECKPOINT_FILE
            if not saved:
                trainer.save_checkpoint(target)  # every rank takes part; rank 0 writes
            elif written is not None:
                _link_or_copy(written, target)
            elif trainer.is_global_zero:  # not expected: a ModelCheckpoint saved, but not through this process's IO
                module = trainer.lightning_module
                module.gather_rng = False  # rank 0 alone: no collective (the other ranks restore rank 0's RNG)
                try:
                    trainer.strategy.checkpoint_io.save_checkpoint(trainer._checkpoint_connector.dump_checkpoint(),
                                                                   target)
                finally:
                    module.gather_rng = True
            checkpoint = ray.train.Checkpoint.from_directory(tmp) if trainer.is_global_zero else None
            ray.train.report(metrics, checkpoint=checkpoint)
        log.info("reported the checkpoint of step %d to Ray Train (%s)", step,
                 f"{written.name}, written at this step" if written else "saved for the report")


def saved_at(trainer: L.Trainer, step: int) -> bool:
    """Whether a ModelCheckpoint wrote a checkpoint at global step `step` (decided alike on every rank: by the step
    count, or by the validation score all ranks share)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    return any(isinstance(cb, ModelCheckpoint) and cb._last_global_step_saved == step
               for cb in trainer.checkpoint_callbacks)


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
    """One Ray Train worker: `train()` with Ray Train's Lightning integration, continuing from the checkpoint Ray
    Train hands back after a restart (or a restored run), attached to the driver's retrieval service."""
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    opts: TrainOptions = config["opts"]
    launched = Launched(strategy=RayDDPStrategy(find_unused_parameters=True), plugins=[RayLightningEnvironment()],
                        prepare=prepare_trainer)
    context = ray.train.get_context()
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext() as restored:
        ckpt = Path(restored) / CHECKPOINT_FILE if restored is not None else None
        if ckpt is not None and context.get_world_rank() == 0:
            log.warning("ray train: continuing from the checkpoint reported to Ray Train, %s", ckpt)
        train(opts, spec=config["spec"], callbacks=[ReportCheckpoint(opts.save_every_n_steps)], ckpt_path=ckpt,
              launched=launched)  # rank 0 writes its metrics to OUTPUT_DIR/metrics.json, where the driver reads them


def _worker_options(opts: TrainOptions) -> TrainOptions:
    """What each worker runs: training alone (the driver predicts), its batches loaded in-process (--num_workers is
    the worker count here), one device of the kind Ray gives it."""
    return dataclasses.replace(opts, do_predict=False, num_workers=0, gpus=None,
                               accelerator="gpu" if opts.use_gpu else "cpu")


def fit_on_ray(opts: TrainOptions, kb: KbLocation | None) -> dict:
    """Train with Ray Train (`opts`: resolved, absolute); returns rank 0's training metrics (train_seconds,
    train_steps, best_val_em), which it wrote to OUTPUT_DIR/metrics.json."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from rayrag.ray_connect import NAMESPACE, connect

    out = Path(opts.output_dir)
    record = out / RUN_NAME
    if not opts.resume and record.exists():  # a new run: Ray Train would otherwise restore the old one
        shutil.rmtree(record)
    written = out / "metrics.json"
    written.unlink(missing_ok=True)
    n = opts.ray_workers()
    connection = connect(opts.ray_address, namespace=NAMESPACE)
    try:
        check_fits(opts, connection.address)
        with retrieval_service(opts, kb) as spec:  # opened before any worker starts; closed after the last
            trainer = TorchTrainer(
                worker_loop, train_loop_config={"opts": _worker_options(opts), "spec": spec},
                torch_config=TorchConfig(backend="nccl" if opts.use_gpu else "gloo"),
                scaling_config=ScalingConfig(num_workers=n, use_gpu=opts.use_gpu,
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
