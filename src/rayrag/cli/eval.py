"""Evaluate a model on a split: EM and F1 (SQuAD normalisation, best over gold answers), and
retrieval precision@k / recall@k when gold passage titles are given (SPLIT.titles or a
`titles` field in JSONL). Writes SPLIT_generations.txt, SPLIT_predictions.jsonl and
SPLIT_metrics.json to --out (default: the model directory's eval/).

Example:
  rayrag eval --model runs/x/best_model --data_dir data/ --split test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "score a model: EM/F1, retrieval precision@k and recall@k, predictions file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="model directory (init-model or train output)")
    p.add_argument("--data_dir", type=Path, required=True, help="directory with SPLIT.source/.target or SPLIT.jsonl")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--kb", type=Path, default=None, help="knowledge base to retrieve from (default: the model's)")
    p.add_argument("--out", type=Path, default=None, help="where to write predictions and metrics")
    p.add_argument("--n", type=int, default=-1, help="evaluate the first N examples (-1: all)")
    p.add_argument("--n_docs", type=int, default=None, help="passages per question (default: the model's)")
    p.add_argument("--batch_size", type=int, default=16, help="questions per batch")
    p.add_argument("--num_beams", type=int, default=1, help="beams for generation")
    p.add_argument("--max_length", type=int, default=25, help="maximum answer length in tokens")


def run(args: argparse.Namespace) -> int:
    from rayrag.data.qa import load_split
    from rayrag.errors import RayragError
    from rayrag.evaluate.predict import predict, score, write_predictions
    from rayrag.model.checkpoint import load_model

    if args.n_docs is not None and args.n_docs < 1:
        raise RayragError(f"--n_docs {args.n_docs}: must be at least 1")
    examples = load_split(args.data_dir, args.split, args.n)
    loaded = load_model(args.model, kb=args.kb)
    if loaded.retriever is not None and args.n_docs:
        loaded.retriever.backend.kb.check_k(args.n_docs)
    preds = predict(loaded, [e.question for e in examples], batch_size=args.batch_size, num_beams=args.num_beams,
                    max_length=args.max_length, n_docs=args.n_docs, progress=not args.quiet)
    metrics = score(preds, examples)
    out = args.out or Path(args.model) / "eval"
    write_predictions(out, preds, examples, prefix=args.split)
    (out / f"{args.split}_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(metrics, indent=2))
    print(f"predictions and metrics written to {out}")
    return 0
