"""The search's results a person reads: the trials table (trials.csv, trials.md), the plot of validation EM
against steps (trials.png), and the best trial's model as a normal model directory (best_model/)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from rayrag.atomic import atomic_write_text
from rayrag.train.options import TrainOptions
from rayrag.tune.space import Dimension
from rayrag.tune.trial import CHECKPOINT_FILE, FINISHED_FILE

log = logging.getLogger(__name__)

STATUSES = {
    "finished": "trained to its end",
    "stopped early": "stopped by the scheduler (ASHA) at a rung, its validation EM behind the others'",
    "stopped": "still running when the time budget ran out or the search was interrupted (--resume continues it)",
    "failed": "raised an error (the error column says which); the search went on",
    "not run": "never started (time budget, or interrupted)",
}


@dataclass
class TrialRow:
    """One trial: its sampled options, what became of it, its best validation and its history."""

    trial: str
    status: str
    config: dict
    steps: int = 0
    validations: int = 0
    best_val_em: float | None = None
    best_val_f1: float | None = None
    best_step: int | None = None
    error: str = ""
    history: list = field(default_factory=list)
    """(step, val_em) of every validation, in order."""
    best_checkpoint: str | None = None
    """Directory of the Ray Tune checkpoint with the best validation EM."""


def _error_line(error: BaseException) -> str:
    """The cause of a trial's error in one line: the last `SomethingError: message` line of its text."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception): ", ln)]
    text = causes[-1] if causes else (lines[-1] if lines else type(error).__name__)
    return re.sub(r"\x1b\[[0-9;]*m", "", text)[:300]


def collect(grid, stopped_file: Path, dims: dict[str, Dimension]) -> list[TrialRow]:
    """A row per trial of the Ray Tune `ResultGrid`, best validation EM first (failed and unrun trials last)."""
    stopped = json.loads(stopped_file.read_text()) if stopped_file.is_file() else {}
    rows = []
    for result in grid:
        path = Path(result.path)
        trial_id = path.name.removeprefix("trial_")
        config = {k: result.config.get(k) for k in dims} if result.config else {}
        df = result.metrics_dataframe
        history = []
        if df is not None and len(df) and "val_em" in df:
            history = [(int(s), float(e)) for s, e in zip(df["step"], df["val_em"])]
        row = TrialRow(trial_id, "", config, history=history)
        if history:
            best = max(range(len(df)), key=lambda i: (float(df["val_em"].iloc[i]), -i))
            row.best_val_em = float(df["val_em"].iloc[best])
            row.best_val_f1 = float(df["val_f1"].iloc[best])
            row.best_step = int(df["step"].iloc[best])
            row.validations, row.steps = len(df), int(df["step"].max())
        finished = path / FINISHED_FILE
        if result.error is not None:
            row.status, row.error = "failed", _error_line(result.error)
        elif finished.is_file():
            row.status = "finished"
            row.steps = int(json.loads(finished.read_text()).get("train_steps", row.steps))
        elif trial_id in stopped:
            row.status = "stopped early"
        else:
            row.status = "stopped" if history else "not run"
        scored = [(m.get("val_em", -1.0), c) for c, m in (result.best_checkpoints or [])]
        if scored:
            row.best_checkpoint = max(scored, key=lambda x: x[0])[1].path
        rows.append(row)
    order = {"failed": 1, "not run": 2}
    return sorted(rows, key=lambda r: (order.get(r.status, 0), -(r.best_val_em if r.best_val_em is not None else -1)))


def _columns(dims: dict[str, Dimension]) -> list[str]:
    return ["trial", "status", "steps", "validations", "best_val_em", "best_val_f1", "best_step", *dims, "error"]


def _cell(row: TrialRow, col: str):
    if col in row.config:
        return row.config[col]
    value = getattr(row, col)
    return "" if value is None else value


def table_csv(rows: list[TrialRow], dims: dict[str, Dimension]) -> str:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(_columns(dims))
    for row in rows:
        writer.writerow([_cell(row, c) for c in _columns(dims)])
    return text.getvalue()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 and value else f"{value:.3f}"
    return str(value).replace("|", "\\|")


def table_md(rows: list[TrialRow], dims: dict[str, Dimension]) -> str:
    """The trials as a Markdown table, best validation EM first, with the space and what each status means."""
    cols = _columns(dims)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(_cell(row, c)) for c in cols) + " |")
    space = "\n".join(f"- `{k}`: {d.describe()}" for k, d in dims.items())
    seen = dict.fromkeys(r.status for r in rows)
    legend = "\n".join(f"- {s}: {STATUSES[s]}" for s in seen)
    return "\n".join(lines) + f"\n\nSearch space:\n{space}\n\nStatus:\n{legend}\n"


def plot(rows: list[TrialRow], path: Path) -> None:
    """Validation EM against optimizer steps, one line per trial; a trial stopped early ends in a red cross."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for row in rows:
        if not row.history:
            continue
        steps, em = zip(*row.history)
        options = ", ".join(f"{k}={_fmt(v)}" for k, v in row.config.items())
        line, = ax.plot(steps, em, "o-", markersize=3, label=f"{row.trial} {options} ({row.status})")
        if row.status == "stopped early":
            ax.plot(steps[-1], em[-1], "x", color="red", markersize=11, markeredgewidth=2.5)
        elif row.status == "stopped":
            ax.plot(steps[-1], em[-1], "s", color=line.get_color(), markersize=7, fillstyle="none")
    if any(r.status == "stopped early" for r in rows):
        ax.plot([], [], "x", color="red", markersize=9, markeredgewidth=2, label="stopped early (ASHA)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation EM")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{len(rows)} trials")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def export_best(row: TrialRow, base: TrainOptions, out_dir: Path) -> None:
    """The trial's best checkpoint as a model directory (`save_pretrained` + rayrag.json), as `rayrag train`
    writes best_model/: the trial's options applied to the model (dropout, label smoothing, n_docs), the
    knowledge base it was trained with recorded."""
    import torch

    from rayrag.model.checkpoint import load_model, record_kb, save_model
    from rayrag.train.module import RagFineTuner
    from rayrag.train.run import prepare

    job = prepare(dataclasses.replace(base, **row.config), config=False)
    opts, info, kb = job.opts, job.info, job.kb
    loaded = load_model(opts.model_name_or_path, retrieval=False, info=info)
    module = RagFineTuner(opts, loaded, [])
    state = torch.load(Path(row.best_checkpoint) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    if info.is_rag and opts.n_docs is not None:  # a searched n_docs is the model's from now on
        module.model.config.n_docs = opts.n_docs
    if info.is_rag and kb is not None:
        info = record_kb(module.model, info, kb)
    save_model(out_dir, module.model, loaded.question_tokenizer, loaded.generator_tokenizer, info)


def write_results(rows: list[TrialRow], out: Path, base: TrainOptions, dims: dict[str, Dimension]) -> Path | None:
    """trials.csv, trials.md, trials.png and (if any trial validated) best_model/ and best_trial.json in `out`;
    returns the best model's directory or None."""
    atomic_write_text(out / "trials.csv", table_csv(rows, dims))
    atomic_write_text(out / "trials.md", table_md(rows, dims))
    plot(rows, out / "trials.png")
    candidates = [r for r in rows if r.best_checkpoint and r.best_val_em is not None]
    if not candidates:
        log.warning("no trial reported a validation: no best_model/")
        return None
    best = max(candidates, key=lambda r: r.best_val_em)
    export_best(best, base, out / "best_model")
    summary = {"trial": best.trial, "status": best.status, "best_val_em": best.best_val_em,
               "best_val_f1": best.best_val_f1, "best_step": best.best_step, "config": best.config,
               "checkpoint": best.best_checkpoint}
    atomic_write_text(out / "best_trial.json", json.dumps(summary, indent=2) + "\n")
    log.info("best trial %s: val EM %.3f at step %s; model written to %s", best.trial, best.best_val_em,
             best.best_step, out / "best_model")
    return out / "best_model"
