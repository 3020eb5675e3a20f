"""`rayrag tune`'s driver: join or start Ray, open the retrieval service once, run (or restore) the Tune search,
then write the trials table, the plot and the best model.

    connect to Ray ─► open the retrieval service (ray: the actor pool) ─► spec (JSON)
        └─ Tuner(run_trial with the spec, resources per trial) .fit()   (or Tuner.restore(...).fit())
             every trial: rayrag train, attached to the service by its spec; reports val EM/F1 per validation
    close the service (kill the pool) ─► stop Ray if the search started it ─► trials.csv/.md/.png, best_model/
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from rayrag.config import write_config
from rayrag.data.qa import load_split
from rayrag.errors import RayragError
from rayrag.atomic import atomic_write_text
from rayrag.tune.options import SEARCH_DIR, TuneOptions
from rayrag.tune.space import Dimension, build_space

log = logging.getLogger(__name__)

METRIC = "val_em"
STOPPED_FILE = "stopped_early.json"
"""In --output_dir: the trials the scheduler stopped, and at which validation (kept across --resume)."""


@dataclass
class SearchOutcome:
    """What the search left: the trial rows, how it ended (`complete`, `time budget` or `interrupted`: trials
    left to run, which --resume runs), and where it wrote."""

    rows: list
    ended: str
    out: Path
    best_model: Path | None


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _max_validations(opts: TuneOptions, n_train: int, dims: dict[str, Dimension]) -> int:
    """An upper bound on the validations a trial runs (ASHA's max_t), from the smallest batch it may get."""
    t = opts.train
    batch = t.train_batch_size
    if "train_batch_size" in dims:
        batch = min(dims["train_batch_size"].values)
    per_epoch = math.ceil(max(1, n_train) / max(1, batch) / t.gradient_accumulation_steps)
    steps = t.max_steps if t.max_steps > 0 else per_epoch * t.num_train_epochs
    vci = t.val_check_interval
    reports = steps / vci if vci > 1 else t.num_train_epochs * max(1, math.floor(1 / vci))
    return max(1, math.ceil(reports)) + 1


def _recording_asha(path: Path, **kwargs):
    """Ray Tune's ASHAScheduler that also records, in `path`, each trial it stops (the table's
    'stopped early'; a trial stopped by the time budget or Ctrl-C is not in it)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class RecordingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP:
                stopped = json.loads(path.read_text()) if path.is_file() else {}
                stopped[trial.trial_id] = {"validation": result.get("training_iteration"),
                                           "step": result.get("step"), METRIC: result.get(METRIC)}
                atomic_write_text(path, json.dumps(stopped, indent=2) + "\n")
                log.info("trial %s stopped early at step %s (val EM %s)", trial.trial_id, result.get("step"),
                         result.get(METRIC))
            return decision

    return RecordingASHA(**kwargs)


def _tuner(opts: TuneOptions, trainable, dims: dict[str, Dimension], n_train: int, out: Path, callbacks: list):
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from rayrag.tune.space import param_space

    if opts.scheduler == "asha":
        scheduler = _recording_asha(out / STOPPED_FILE, time_attr="training_iteration",
                                    max_t=max(opts.grace_period, _max_validations(opts, n_train, dims)),
                                    grace_period=opts.grace_period, reduction_factor=opts.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    tune_config = tune.TuneConfig(
        metric=METRIC, mode="max", scheduler=scheduler, num_samples=opts.num_samples,
        max_concurrent_trials=opts.max_concurrent_trials or None,
        time_budget_s=opts.time_budget_minutes * 60 if opts.time_budget_minutes > 0 else None,
        trial_dirname_creator=_trial_dirname)
    run_config = tune.RunConfig(
        name=SEARCH_DIR, storage_path=str(out), callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=METRIC,
                                                checkpoint_score_order="max"))
    return tune.Tuner(trainable, param_space=param_space(dims), tune_config=tune_config, run_config=run_config)


def _read_dims(opts: TuneOptions, out: Path) -> dict[str, Dimension]:
    """The space: from the flags for a new search, from the first run's space.json for --resume."""
    saved = out / "space.json"
    if opts.resume:
        data = json.loads(saved.read_text()) if saved.is_file() else {}
        return {k: Dimension(k, v["kind"], tuple(v["values"]), v["where"]) for k, v in data.items()}
    dims = build_space(opts.space, opts.inline_space())
    atomic_write_text(saved, json.dumps({k: {"kind": d.kind, "values": list(d.values), "where": d.where}
                                         for k, d in dims.items()}, indent=2) + "\n")
    return dims


def run_search(opts: TuneOptions) -> SearchOutcome:
    """Run `rayrag tune` (or continue it with --resume); returns the outcome after writing the results."""
    from rayrag.cluster import connect
    from rayrag.retrieval.service import serving
    from rayrag.train.run import prepare, retrieval_request

    opts.validate()
    opts = opts.resolved()
    out = Path(opts.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not opts.resume:
        write_config(opts, out)
    base = opts.trial_options(out / SEARCH_DIR)
    job = prepare(base, config=False)  # the model and its knowledge base, as every trial will find them
    n_train = len(load_split(base.data_dir, "train", base.n_train))  # bad data fails here, before any trial
    dims = _read_dims(opts, out)
    experiment = out / SEARCH_DIR
    t0 = time.perf_counter()
    connection = connect(opts.train.cluster.address)
    try:
        # Ray only now: it reads its configuration (token authentication) when first imported, which `connect` set
        from ray import tune

        from rayrag.tune.memory import MemoryProbe
        from rayrag.tune.results import collect, write_results
        from rayrag.tune.trial import run_trial

        probe = MemoryProbe(out / "memory.json", Path(job.kb.kb) if job.kb is not None else None)
        callbacks = [probe] if opts.memory_report and connection.started else []
        if opts.memory_report and not connection.started:
            log.warning("--memory_report: measured only on a Ray instance the search starts (--ray_address local)")
        with serving(None if opts.pool_per_trial else retrieval_request(job)) as spec:
            trainable = tune.with_parameters(run_trial, base=base, spec=spec)
            trainable = tune.with_resources(trainable, {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
            if opts.resume:
                if not tune.Tuner.can_restore(str(experiment)):
                    raise RayragError(f"--resume: {experiment} holds no Ray Tune state to continue; drop --resume and "
                                      "use a new --output_dir")
                tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True,
                                           resume_errored=False, restart_errored=False)
            else:
                tuner = _tuner(opts, trainable, dims, n_train, out, callbacks)
            grid = tuner.fit()
    finally:
        connection.close()
    seconds = time.perf_counter() - t0
    rows = collect(grid, out / STOPPED_FILE, dims)
    best = write_results(rows, out, base, dims)
    ended = _ended(opts, dims, rows, seconds)
    log.info("search: %d trials in %.0f s (%s)", len(rows), seconds, ended)
    return SearchOutcome(rows, ended, out, best)


def _ended(opts: TuneOptions, dims: dict[str, Dimension], rows: list, seconds: float) -> str:
    """`complete` when every trial the space makes (samples x grid points) finished, stopped early or failed;
    otherwise `time budget` if the budget has run out, else `interrupted` (Ctrl-C)."""
    expected = opts.num_samples * math.prod(len(d.values) for d in dims.values() if d.kind == "grid")
    left = [r for r in rows if r.status in ("stopped", "not run")]
    if len(rows) >= expected and not left:
        return "complete"
    budget = opts.time_budget_minutes * 60
    return "time budget" if budget > 0 and seconds >= budget else "interrupted"
