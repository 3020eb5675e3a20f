"""The recipes in configs/: each parses as `rayrag train --config FILE`, holds training settings only, and equals what
its task trains with (`rayrag demo`; scripts/realtext.py, which reads its recipe) and what the docs report."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from importlib import import_module
from pathlib import Path

import pytest
import yaml

from rayrag.cli.parse import parse
from rayrag.tasks.demo import DemoOptions, train_settings
from rayrag.train.options import TrainOptions

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))
PER_RUN = {"data_dir", "output_dir", "model_name_or_path", "do_train", "do_predict", "resume", "progress", "profile"}
"""What a recipe leaves to the command line: where the run reads and writes, and what it does."""
WHERE_IT_RUNS = {"gpus", "accelerator", "devices", "num_nodes", "launcher", "num_workers", "use_gpu",
                 "cpus_per_worker", "max_failures", "distributed_retriever", "num_retrieval_workers", "ray_address",
                 "index_name", "passages_path", "index_path"}
"""Hardware, launcher, knowledge base, retrieval backend and Ray settings (flat spellings): never in a recipe."""


def _train(*argv) -> TrainOptions:
    opts, _ = parse(import_module("rayrag.cli.train"), "rayrag train", [str(a) for a in argv])
    return opts


def _recipe(path: Path, out: Path, model: str, model_dir: str | None = None) -> TrainOptions:
    """`rayrag train --config PATH` with a run's paths, as the README tells a user to call it."""
    return _train("--config", path, "--data_dir", out / "data", "--output_dir", out / model,
                  "--model_name_or_path", out / (model_dir or f"{model}-init"), "--do_train", "true")


def _script():
    spec = importlib.util.spec_from_file_location("realtext_script", ROOT / "scripts" / "realtext.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_the_two_recipes():
    assert [p.name for p in RECIPES] == ["demo.yaml", "realtext.yaml"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_a_recipe_parses_and_holds_training_settings_only(path, tmp_path):
    keys = set(yaml.safe_load(path.read_text(encoding="utf-8")))
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    assert keys <= fields, f"not rayrag train options: {keys - fields}"
    defaults = _train("--data_dir", tmp_path / "data", "--output_dir", tmp_path / "rag", "--model_name_or_path",
                      tmp_path / "rag-init", "--do_train", "true")
    groups = {k for k in keys if dataclasses.is_dataclass(getattr(defaults, k))}  # --kb.*, --retrieval.*, ...
    assert not groups and not keys & (PER_RUN | WHERE_IT_RUNS), keys & (PER_RUN | WHERE_IT_RUNS | groups)
    opts = _recipe(path, tmp_path, "rag")
    for key, value in yaml.safe_load(path.read_text(encoding="utf-8")).items():
        assert getattr(opts, key) == value, key  # every key reaches the options (floats written as floats)
        assert type(getattr(opts, key)) is type(getattr(defaults, key)) or getattr(defaults, key) is None, key
    opts.validate()


def test_the_demo_trains_with_configs_demo_yaml(tmp_path):
    """`rayrag demo` builds its RAG run's options in code (it must work from an installed package, which has no
    configs/); the recipe is the user's copy, kept equal key for key."""
    settings = train_settings(DemoOptions())
    assert set(yaml.safe_load((CONFIGS / "demo.yaml").read_text(encoding="utf-8"))) == set(settings)
    demo = TrainOptions(data_dir=tmp_path / "data", output_dir=tmp_path / "rag",
                        model_name_or_path=tmp_path / "rag-init", do_train=True, **settings)
    assert _recipe(CONFIGS / "demo.yaml", tmp_path, "rag") == demo
    closed_book = train_settings(DemoOptions(), rag=False)
    assert not {"n_docs", "question_encoder_lr", "max_time_minutes"} & set(closed_book)
    assert closed_book == {k: v for k, v in settings.items() if k in closed_book}


def test_the_realtext_script_trains_with_configs_realtext_yaml(tmp_path):
    """scripts/realtext.py reads the recipe: with no flags its RAG run is exactly `rayrag train --config
    configs/realtext.yaml` on the task's paths, and the closed-book run the same without the RAG-only settings."""
    script = _script()
    assert script.RECIPE == CONFIGS / "realtext.yaml"
    args = script.parse_args(["train", "--out", str(tmp_path)])
    assert script.train_settings("rag", tmp_path, args.minutes, args) == _recipe(script.RECIPE, tmp_path, "rag")
    closed = script.train_settings("closed_book", tmp_path, args.minutes, args)
    expected = dataclasses.replace(_recipe(script.RECIPE, tmp_path, "closed_book", script.MODELS["closed_book"]),
                                   n_docs=None, eval_n_docs=None, max_combined_length=None, question_encoder_lr=None)
    assert closed == expected
    recipe = yaml.safe_load(script.RECIPE.read_text(encoding="utf-8"))
    assert {key: getattr(args, flag) for flag, key in script.FROM_RECIPE.items()} == \
        {key: recipe[key] for key in script.FROM_RECIPE.values()}  # prepare's --n_docs, --seed... too


def test_the_realtext_end2end_run_is_the_rag_run_with_the_passage_encoder_trained(tmp_path):
    script = _script()
    args = script.parse_args(["train", "--out", str(tmp_path), "--model", "end2end", "--reindex_every", "40"])
    opts = script.train_settings("end2end", tmp_path, args.minutes, args)
    assert (opts.train_context_encoder, opts.reindex_every, opts.context_encoder_lr) == (True, 40, 1e-5)
    assert opts.output_dir == tmp_path / "end2end" and opts.model_name_or_path == tmp_path / "rag-init"
    rag = script.train_settings("rag", tmp_path, args.minutes, args)
    assert dataclasses.replace(opts, train_context_encoder=False, context_encoder_lr=None, reindex_every=500,
                               reindex_threads=1, output_dir=rag.output_dir) == rag


def test_realtext_throughput_splits_steps_by_whether_a_reindex_was_running(tmp_path):
    """Steps 0-9 one second apart, a re-index running from t=2.5 to t=6.5 whose step 6 waited 3 s: intervals that
    start while it runs are "running" (6 s for 3 steps with the wait), validations (before step 5, val_every 5) left
    out."""
    index = tmp_path / "index"
    index.mkdir()
    times = [0, 1, 2, 3, 4, 5, 6, 10, 11, 12]
    (index / "steps-rank0.csv").write_text("".join(f"{s},{int(t >= 10)},{1.8e9 + t}\n" for s, t in enumerate(times)))
    history = [{"number": 1, "started_step": 2, "started_time": 1.8e9 + 2.5, "finished_time": 1.8e9 + 6.5,
                "outcome": "done", "switched_step": 7}]
    (index / "history.json").write_text(__import__("json").dumps(history))
    got = _script().refresh_throughput(index, val_every=5)
    # running: 3->4, 5->6 (1 s each), 6->7 (4 s); idle: 0->1, 1->2, 2->3, 7->8, 8->9; 4->5 holds a validation
    assert got["intervals"] == {"running": {"steps": 3, "seconds": 6.0}, "idle": {"steps": 5, "seconds": 5.0}}
    assert got["steps_per_minute_while_reindexing"] == pytest.approx(30.0)
    assert got["ratio"] == pytest.approx(0.5) and got["generations_switched"] == 1


def test_a_script_flag_overrides_the_recipe(tmp_path):
    script = _script()
    args = script.parse_args(["train", "--out", str(tmp_path), "--train_batch_size", "4", "--no-bf16"])
    opts = script.train_settings("rag", tmp_path, args.minutes, args)
    assert (opts.train_batch_size, opts.fp16) == (4, False)
    assert dataclasses.replace(opts, train_batch_size=8, fp16=True) == _recipe(script.RECIPE, tmp_path, "rag")


def test_the_realtext_recipe_is_the_measured_runs_settings():
    """The settings the reported 30-minute run recorded (docs/results/realtext.json, from its realtext.json) are
    the recipe's, so `rayrag train --config configs/realtext.yaml` is what was measured."""
    recorded = json.loads((ROOT / "docs" / "results" / "realtext.json").read_text(encoding="utf-8"))
    run = recorded["runs"]["rag_fine_tuned"]
    recipe = yaml.safe_load((CONFIGS / "realtext.yaml").read_text(encoding="utf-8"))
    script = _script()
    for flag, value in run["settings"].items():
        if flag in script.FROM_RECIPE:
            assert recipe[script.FROM_RECIPE[flag]] == value, flag
    assert recipe["max_time_minutes"] == run["minutes_budget"] and recipe["n_docs"] == recorded["n_docs"]
