"""`rayrag tune`: the search space and its one-line errors (fast), and real searches with Ray Tune on tiny
models (slow): ASHA stops a trial, one pool serves every trial, a failed trial is recorded, Ctrl-C then
--resume runs no finished trial again."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayrag.errors import RayragError
from rayrag.train.options import TrainOptions
from rayrag.tune.options import TuneOptions
from rayrag.tune.space import build_space, check_values, parse_dimension

# ----- fast tier: the space, the options, one-line errors --------------------------------------------------


def _opts(tmp_path: Path, train: dict | None = None, **kw) -> TuneOptions:
    """Search options over train options of `train` (field -> value) and search flags `kw`."""
    return TuneOptions(TrainOptions(data_dir=tmp_path / "data", output_dir=tmp_path / "out",
                                    model_name_or_path=tmp_path / "m", **(train or {})), **kw)


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_space_file_and_inline_flags(tmp_path):
    from ray import tune

    path = _space(tmp_path, "learning_rate: {loguniform: [1.0e-5, 3.0e-4]}\n"
                            "n_docs: {choice: [2, 3]}\n"
                            "dropout: {uniform: [0.0, 0.2]}\n"
                            "warmup_steps: {randint: [0, 50]}\n"
                            "lr_scheduler: {grid: [linear, constant]}\n"
                            "label_smoothing: {choice: [0.0, 0.1]}\n")
    dims = build_space(path, {"n_docs": "choice:2,4", "question_encoder_lr": "{choice: [0, 1e-5]}",
                              "learning_rate": None})
    assert set(dims) == {"learning_rate", "n_docs", "dropout", "warmup_steps", "lr_scheduler", "label_smoothing",
                         "question_encoder_lr"}
    assert dims["learning_rate"].values == (1e-5, 3e-4) and dims["learning_rate"].where == str(path)
    assert dims["n_docs"].values == (2, 4) and dims["n_docs"].where == "--search.n_docs"  # the flag wins
    assert dims["question_encoder_lr"].values == (0.0, 1e-5)  # YAML 1.1 reads 1e-5 as text: made a number
    assert dims["lr_scheduler"].to_tune() == {"grid_search": ["linear", "constant"]}
    lr = dims["learning_rate"].to_tune()
    assert isinstance(lr, tune.search.sample.Float) and (lr.lower, lr.upper) == (1e-5, 3e-4)
    assert isinstance(dims["warmup_steps"].to_tune(), tune.search.sample.Integer)
    check_values(dims, _opts(tmp_path).trial_options(tmp_path / "t"))  # every value is one train accepts


def test_the_demo_search_space_parses(tmp_path):
    path = Path(__file__).resolve().parents[1] / "docs" / "tune_demo_space.yaml"
    dims = build_space(path, {})
    assert set(dims) == {"learning_rate", "question_encoder_lr", "warmup_steps", "lr_scheduler"}
    check_values(dims, _opts(tmp_path).trial_options(tmp_path / "t"))

def test_json_space_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"train_batch_size": {"grid": [8, 16]}, "learning_rate": {"uniform": [1e-4, 2e-4]}}))
    dims = build_space(path, {})
    assert dims["train_batch_size"].values == (8, 16) and dims["learning_rate"].kind == "uniform"


BAD_SPACES = [
    ("learnin_rate: {loguniform: [1.0e-5, 3.0e-4]}\n",
     r"space\.yaml: learnin_rate: not an option of `rayrag train`; did you mean learning_rate\?"),
    ("output_dir: {choice: [a, b]}\n", r"space\.yaml: output_dir: fixed for the whole search, not searchable"),
    ("learning_rate: {loguniform: [0, 3.0e-4]}\n", r"space\.yaml: learning_rate: loguniform bounds \[0, 0\.0003\]: "
                                                   r"both must be above 0; use uniform to include 0"),
    ("dropout: {uniform: [0.3, 0.1]}\n", r"space\.yaml: dropout: uniform bounds \[0\.3, 0\.1\]: the low bound must "
                                         r"be below the high one"),
    ("n_docs: {uniform: [1, 4]}\n", r"space\.yaml: n_docs: n_docs takes whole numbers; use randint, choice or grid"),
    ("warmup_steps: {randint: [0.5, 10]}\n", r"randint takes two whole numbers \[low, high\]"),
    ("learning_rate: {lognormal: [1, 2]}\n", r"learning_rate: unknown distribution 'lognormal'; did you mean"),
    ("learning_rate: 0.001\n", r"learning_rate: 0\.001 is not a distribution; write one distribution per option"),
    ("n_docs: {choice: []}\n", r"n_docs: choice takes a non-empty list of values"),
    ("n_docs: {choice: [2, x]}\n", r"n_docs: choice value 'x' is not a int; give such values"),
    ("lr_scheduler: {uniform: [1, 2]}\n", r"lr_scheduler: uniform needs a numeric option"),
    ("learning_rate: {loguniform: [1.0e-5, 3.0e-4]\nn_docs: [2\n", r"space\.yaml:\d+: not valid YAML or JSON"),
    ("- learning_rate\n", r"space\.yaml: holds a list, not a mapping"),
    ("", r"space\.yaml: empty; write one distribution per option"),
    ("dropout: {uniform: [0.0, 1.5]}\n", r"space\.yaml: dropout: uniform\[0\.0, 1\.5\] can give 1\.5, which `rayrag "
                                         r"train` refuses \(--dropout 1\.5: must be in \[0, 1\]\); narrow"),
    ("lr_scheduler: {choice: [linear, cosinus]}\n", r"lr_scheduler: choice value 'cosinus' is not one of linear, "
                                                    r"cosine, cosine_w_restarts, polynomial, constant"),
]


@pytest.mark.parametrize("text,message", BAD_SPACES, ids=[m[:40] for _, m in BAD_SPACES])
def test_bad_space_is_one_line_naming_file_and_key(tmp_path, text, message):
    opts = _opts(tmp_path, space=_space(tmp_path, text))
    with pytest.raises(RayragError) as e:
        opts.validate()
    assert len(str(e.value).splitlines()) == 1 and re.search(message, str(e.value)), str(e.value)
    assert not (tmp_path / "out").exists()


def test_bad_inline_flag_names_the_flag():
    with pytest.raises(RayragError, match=r"^--search\.n_docs: n_docs: choice takes a non-empty list"):
        build_space(None, {"n_docs": "choice:"})
    with pytest.raises(RayragError, match=r"^--search\.learning_rate: learning_rate: loguniform bounds"):
        build_space(None, {"learning_rate": "loguniform:3e-4,1e-5"})
    assert parse_dimension("n_docs", {"randint": [1, 4]}, "x").to_tune().upper == 4  # 4 excluded, as in Tune


@pytest.mark.parametrize("kw,message", [
    ({}, r"nothing to search: give --space FILE or an inline --search\.OPTION"),
    ({"train": {"devices": 2}}, r"--devices 2: a trial runs one training process"),
    ({"scheduler": "hyperband"}, r"--scheduler 'hyperband': choose asha or fifo"),
    ({"train": {"do_predict": True}}, r"--do_predict: a search trains only"),
    ({"cpus_per_trial": 0.0}, r"--cpus_per_trial 0\.0: must be above 0"),
    ({"reduction_factor": 1.0}, r"--reduction_factor 1\.0: must be above 1"),
    ({"train": {"resume": True}}, r"--resume: no search in .* to continue; drop --resume"),
    ({"train": {"learning_rate": -1.0}}, r"--learning_rate -1\.0: must be positive"),
])
def test_bad_search_flags(tmp_path, kw, message):
    with pytest.raises(RayragError, match=message):
        _opts(tmp_path, **kw).validate()


def test_existing_search_needs_resume(tmp_path):
    (tmp_path / "out" / "search").mkdir(parents=True)
    with pytest.raises(RayragError, match=r"holds a search already .*; pass --resume to continue it"):
        _opts(tmp_path, search=_inline(learning_rate="choice:1e-4,2e-4")).validate()


def _inline(**kw):
    from rayrag.tune.options import InlineSpace

    return InlineSpace(**kw)


def test_cli_bad_space_prints_one_line_and_starts_nothing(tmp_path, capsys):
    from rayrag.cli.main import main

    space = _space(tmp_path, "n_doc: {choice: [2, 3]}\n")
    rc = main(["tune", "--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--model_name_or_path",
               str(tmp_path), "--space", str(space)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0] == f"rayrag tune: error: {space}: n_doc: not an option of `rayrag train`; did you mean n_docs?"
    assert not (tmp_path / "out").exists()


def test_trials_table_and_plot(tmp_path):
    from rayrag.tune.results import TrialRow, plot, table_csv, table_md

    dims = build_space(None, {"learning_rate": "loguniform:1e-5,3e-4"})
    rows = [TrialRow("a", "finished", {"learning_rate": 2e-4}, 40, 4, 0.5, 0.6, 30, history=[(10, 0.1), (40, 0.5)]),
            TrialRow("b", "stopped early", {"learning_rate": 1e-5}, 10, 1, 0.0, 0.1, 10, history=[(10, 0.0)]),
            TrialRow("c", "failed", {"learning_rate": 3e-5}, error="RayragError: --n_docs 1000: too many")]
    lines = table_md(rows, dims).splitlines()
    assert lines[0] == ("| trial | status | steps | validations | best_val_em | best_val_f1 | best_step | "
                        "learning_rate | error |")
    assert lines[2] == "| a | finished | 40 | 4 | 0.500 | 0.600 | 30 | 0.0002 |  |"
    assert "- stopped early: stopped by the scheduler (ASHA)" in lines[-3:][0] or any(
        ln.startswith("- stopped early:") for ln in lines)
    parsed = list(csv.DictReader(table_csv(rows, dims).splitlines()))
    assert [r["status"] for r in parsed] == ["finished", "stopped early", "failed"]
    assert parsed[2]["error"].startswith("RayragError") and parsed[1]["best_val_em"] == "0.0"
    plot(rows, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 10_000


# ----- slow tier: real searches -----------------------------------------------------------------------------


def _tune(*args, check=True, timeout=420):
    from conftest import rayrag

    return rayrag("tune", *args, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def dog_data(corpus_dir, tmp_path_factory) -> Path:
    """The corpus's questions, every answer `dog` (one token of the tiny tokenizer): a tiny model learns it within
    a few steps at a good learning rate and never at a tiny one, so trials differ in validation EM for sure."""
    d = tmp_path_factory.mktemp("dog") / "data"
    shutil.copytree(corpus_dir / "data", d)
    for split in ("train", "val", "test"):
        n = len((d / f"{split}.source").read_text().splitlines())
        (d / f"{split}.target").write_text("dog\n" * n)
    return d


def _rows(out: Path) -> list[dict]:
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


COMMON = ["--train_batch_size", "16", "--n_val", "8", "--eval_batch_size", "8", "--val_max_target_length", "4",
          "--max_target_length", "6", "--log_every_n_steps", "1", "--quiet"]


@pytest.mark.slow
def test_asha_stops_a_trial_and_the_best_model_evaluates(tmp_path, dog_data, tiny_rag):
    from conftest import rayrag

    out = tmp_path / "search"
    _tune("--data_dir", dog_data, "--output_dir", out, "--model_name_or_path", tiny_rag, *COMMON,
          "--search.learning_rate", "grid:3e-3,1e-7,3e-3,1e-7", "--num_samples", "1", "--max_steps", "12",
          "--val_check_interval", "3", "--max_concurrent_trials", "2", "--scheduler", "asha", "--grace_period", "1")
    rows = _rows(out)
    assert len(rows) == 4
    statuses = [r["status"] for r in rows]
    assert "stopped early" in statuses and "finished" in statuses, rows
    for r in rows:
        if r["status"] == "stopped early":
            assert float(r["learning_rate"]) == 1e-7 and int(r["steps"]) < 12, r
        if r["status"] == "finished":
            assert int(r["steps"]) == 12 and int(r["validations"]) == 4, r
    best = json.loads((out / "best_trial.json").read_text())
    assert best["config"]["learning_rate"] == 3e-3 and best["best_val_em"] > 0.5
    assert (out / "trials.png").stat().st_size > 10_000 and "| stopped early |" in (out / "trials.md").read_text()
    ev = rayrag("eval", "--model", out / "best_model", "--data_dir", dog_data, "--split", "val", "--n", "8",
                "--max_length", "4", "--out", tmp_path / "ev", "--quiet")
    assert json.loads((tmp_path / "ev" / "val_metrics.json").read_text())["em"] == pytest.approx(
        best["best_val_em"]), ev.stdout


@pytest.mark.slow
def test_one_pool_serves_every_trial_and_a_failed_trial_is_recorded(tmp_path, dog_data, tiny_rag):
    """Trials side by side (0.5 CPU each), one of them asking for more passages than the knowledge base has: one
    actor maps the index for every trial, in every sample. (With --pool_per_trial each trial starts actors of its
    own: measured once, docs/ARCHITECTURE.md; not repeated here, for the suite's time.)"""
    out = tmp_path / "shared"
    _tune("--data_dir", dog_data, "--output_dir", out, "--model_name_or_path", tiny_rag, *COMMON,
          "--search.n_docs", "grid:2,3,1000", "--num_samples", "1", "--max_steps", "16", "--val_check_interval", "4",
          "--cpus_per_trial", "0.5", "--scheduler", "fifo", "--learning_rate", "3e-3",
          "--distributed_retriever", "ray", "--num_retrieval_workers", "1", "--memory_report")
    rows = {r["n_docs"]: r for r in _rows(out)}
    assert rows["2"]["status"] == rows["3"]["status"] == "finished", rows
    shared = json.loads((out / "memory.json").read_text())
    assert rows["1000"]["status"] == "failed", rows["1000"]
    assert re.search(r"--n_docs 1000: must be between 1 and the 200 passages", rows["1000"]["error"]), rows["1000"]
    assert shared["peak"]["running_trials"] >= 2, shared["peak"]
    assert {(s["retrieval_actors"], s["index_holders"]) for s in shared["samples"]} == {(1, 1)}, shared["samples"]


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"rayrag tune exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_ctrl_c_stops_trials_and_pool_then_resume_runs_no_finished_trial_again(tmp_path, dog_data, tiny_rag):
    import psutil

    out = tmp_path / "search"
    args = ["--data_dir", dog_data, "--output_dir", out, "--model_name_or_path", tiny_rag,
            *[a for a in COMMON if a != "--quiet"], "--search.learning_rate", "grid:1e-3,3e-3",
            "--num_samples", "1", "--max_steps", "8", "--val_check_interval", "4", "--scheduler", "fifo",
            "--max_concurrent_trials", "1", "--distributed_retriever", "ray", "--num_retrieval_workers", "2"]
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "rayrag", "tune", *map(str, args)], stdout=f,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        finished = lambda: sorted((out / "search").glob("trial_*/finished.json"))  # noqa: E731
        _wait_for(lambda: len(finished()) == 1, proc, "finished trial")
        first = finished()[0].parent
        _wait_for(lambda: any(p != first and (p / "result.json").is_file() and (p / "result.json").stat().st_size
                              for p in (out / "search").glob("trial_*")), proc, "second trial's first report")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=180) == 130, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    pids = [int(p) for p in re.search(r"actor pids ([\d,]+)", text).group(1).split(",")]
    assert len(pids) == 2 and not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
    assert "did not finish (interrupted): continue it with" in text
    before = {"lines": (first / "result.json").read_text().count("\n"),
              "finished": (first / "finished.json").stat().st_mtime_ns}

    _tune("--config", out / "config.yaml", "--resume", "--quiet")
    rows = _rows(out)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}, rows
    assert (first / "result.json").read_text().count("\n") == before["lines"]  # not run again
    assert (first / "finished.json").stat().st_mtime_ns == before["finished"]
    assert (out / "best_model" / "config.json").is_file()
