"""One trial: `rayrag train` with the trial's sampled options, reporting validation EM/F1 to Ray Tune.

Runs inside a Ray Tune trial process. It trains through `rayrag.train.run.train` with the spec of the
retrieval service the search's driver opened (so every trial attaches to one pool), Ray Tune's Lightning
callback to report each validation with a checkpoint, and the trial's last checkpoint when Tune restarts it
(`ray.tune.get_checkpoint`, after `rayrag tune --resume`). A trial that trains to its end writes
`finished.json` in its directory; one stopped by the scheduler or by the time budget never gets there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path

from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

from rayrag.train.options import TrainOptions

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "trial.ckpt"
"""The Lightning checkpoint inside each Ray Tune checkpoint directory."""
FINISHED_FILE = "finished.json"
"""Written in a trial's directory when it has trained to its end: its `train` metrics."""
METRICS = ("val_em", "val_f1")


class ReportValidation(TuneReportCheckpointCallback):
    """Ray Tune's Lightning callback (a report and a checkpoint after each validation), with the optimizer step
    of the validation added to the report, so that trials of different batch sizes compare on one axis."""

    def __init__(self):
        super().__init__(metrics=list(METRICS), filename=CHECKPOINT_FILE, on="validation_end")

    def _get_report_dict(self, trainer, pl_module):
        report = super()._get_report_dict(trainer, pl_module)
        if report:
            report["step"] = int(trainer.global_step)
        return report


def run_trial(config: dict, base: TrainOptions, spec: str | None) -> None:
    """Train with `base` updated by `config` (option -> sampled value) in the trial's own directory, attached
    to the service of `spec` (None: the trial opens its own, as `rayrag train` does)."""
    import ray.tune
    from rayrag.atomic import atomic_write_text
    from rayrag.train.run import train

    trial_dir = Path(ray.tune.get_context().get_trial_dir())
    opts = dataclasses.replace(base, output_dir=trial_dir, **config)
    checkpoint = ray.tune.get_checkpoint()
    with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext() as restored:
        ckpt = Path(restored) / CHECKPOINT_FILE if restored is not None else None
        if ckpt is not None:
            log.info("trial %s: continuing from %s", trial_dir.name, ckpt)
        metrics = train(opts, spec=spec, callbacks=[ReportValidation()], ckpt_path=ckpt, checkpoints=False)
    atomic_write_text(trial_dir / FINISHED_FILE, json.dumps(metrics, indent=2) + "\n")
