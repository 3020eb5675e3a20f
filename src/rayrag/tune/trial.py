"""One trial: `rayrag train` with the trial's sampled options, reporting validation EM/F1 to Ray Tune.

Runs inside a Ray Tune trial process. It composes `rayrag train`'s steps (`rayrag.train.run`: prepare,
build_trainer, fit) with the spec of the retrieval service the search's driver opened (so every trial attaches to
one pool), a callback that reports each validation to Ray Tune with a checkpoint (Ray Tune keeps the checkpoints:
the trial writes no checkpoints/ and no best_model/), and the trial's last checkpoint when Tune restarts it
(`ray.tune.get_checkpoint`, after `rayrag tune --resume`). A trial that trains to its end writes
`finished.json` in its directory; one stopped by the scheduler or by the time budget never gets there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import lightning as L

from rayrag.train.options import TrainOptions

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "trial.ckpt"
"""The Lightning checkpoint inside each Ray Tune checkpoint directory."""
FINISHED_FILE = "finished.json"
"""Written in a trial's directory when it has trained to its end: its `train` metrics."""
METRICS = ("val_em", "val_f1")


class ReportValidation(L.Callback):
    """After each validation, reports val_em/val_f1 and the optimizer step of the validation to Ray Tune (so that
    trials of different batch sizes compare on one axis), with the trial's state as a checkpoint (`trial.ckpt`)
    that Ray Tune keeps and hands back when it continues the trial."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import ray.tune

        if trainer.sanity_checking:
            return
        report = {name: float(trainer.callback_metrics[name]) for name in METRICS if name in trainer.callback_metrics}
        report["step"] = int(trainer.global_step)
        with tempfile.TemporaryDirectory(prefix=".rayrag-trial-") as tmp:
            trainer.save_checkpoint(Path(tmp) / CHECKPOINT_FILE)
            ray.tune.report(report, checkpoint=ray.tune.Checkpoint.from_directory(tmp))


def run_trial(config: dict, base: TrainOptions, spec: str | None) -> None:
    """Train with `base` updated by `config` (option -> sampled value) in the trial's own directory, attached
    to the service of `spec` (None: the trial opens its own, as `rayrag train` does)."""
    import ray.tune
    from rayrag.atomic import atomic_write_text
    from rayrag.retrieval.service import serving
    from rayrag.train.run import build_trainer, fit, prepare, retrieval_request

    trial_dir = Path(ray.tune.get_context().get_trial_dir())
    job = prepare(dataclasses.replace(base, output_dir=trial_dir, **config), config=False)
    trainer = build_trainer(job, callbacks=[ReportValidation()], checkpoints=False)  # Ray Tune keeps them
    checkpoint = ray.tune.get_checkpoint()
    own = serving(retrieval_request(job)) if spec is None else contextlib.nullcontext(spec)
    with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext() as restored, own as spec:
        ckpt = Path(restored) / CHECKPOINT_FILE if restored is not None else None
        if ckpt is not None:
            log.info("trial %s: continuing from %s", trial_dir.name, ckpt)
        metrics = fit(job, trainer, spec, ckpt_path=ckpt).metrics
    atomic_write_text(trial_dir / FINISHED_FILE, json.dumps(metrics, indent=2) + "\n")
