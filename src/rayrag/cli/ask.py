"""Answer questions with a model and show the passages it retrieved, with their scores.

Example:
  rayrag ask --model runs/x/best_model "where was Quiombrund Piospaerk born?"
  rayrag ask --model runs/x/best_model --file questions.txt --kb other_kb/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "answer questions, showing the retrieved passages"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="model directory")
    p.add_argument("questions", nargs="*", help="questions to answer")
    p.add_argument("--file", type=Path, default=None, help="a file of questions, one per line")
    p.add_argument("--kb", type=Path, default=None, help="knowledge base to retrieve from (default: the model's)")
    p.add_argument("--n_docs", type=int, default=None, help="passages per question (default: the model's)")
    p.add_argument("--num_beams", type=int, default=1, help="beams for generation")
    p.add_argument("--max_length", type=int, default=25, help="maximum answer length in tokens")
    p.add_argument("--json", action="store_true", help="print one JSON object per question")


def run(args: argparse.Namespace) -> int:
    from rayrag.errors import RayragError
    from rayrag.evaluate.predict import predict
    from rayrag.model.checkpoint import load_model

    questions = list(args.questions)
    if args.file is not None:
        if not args.file.is_file():
            raise RayragError(f"--file {args.file}: no such file")
        try:
            text = args.file.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            line = args.file.read_bytes()[:e.start].count(b"\n") + 1
            raise RayragError(f"{args.file}:{line}: not UTF-8; re-save the file as UTF-8") from e
        questions += [q.strip() for q in text.splitlines() if q.strip()]
    if not questions:
        raise RayragError("no questions: give them as arguments or with --file FILE")
    if args.n_docs is not None and args.n_docs < 1:
        raise RayragError(f"--n_docs {args.n_docs}: must be at least 1")
    loaded = load_model(args.model, kb=args.kb)
    if loaded.retriever is not None and args.n_docs:
        loaded.retriever.backend.kb.check_k(args.n_docs)
    preds = predict(loaded, questions, num_beams=args.num_beams, max_length=args.max_length, n_docs=args.n_docs,
                    progress=False)
    for p in preds:
        if args.json:
            print(json.dumps({"question": p.question, "answer": p.answer, "passages": p.passages}))
            continue
        print(f"Q: {p.question}\nA: {p.answer}")
        for rank, d in enumerate(p.passages, start=1):
            text = d["text"] if len(d["text"]) <= 160 else d["text"][:157] + "..."
            print(f"  {rank}. [{d['score']:.3f}] {d['title']}: {text}")
        print()
    return 0
