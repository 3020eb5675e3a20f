"""Run the embedded default job end to end on this machine, with no network and no data of yours.

Invents a knowledge base of fictional people and facts (so no model can know the answers),
indexes it with the packaged MiniLM encoder, assembles and fine-tunes a RAG-token model, and
scores it on questions about people never seen in training, against the model before training
and a closed-book generator trained the same way. Everything lands in --out: data/, kb/,
model-init/, rag/ (the run, with rag/best_model/), closed-book/, eval/, demo_report.json and
demo_report.png (training curve and the three models' scores).
"""

from __future__ import annotations

import argparse

from rayrag.cli.args import add_dataclass_args, to_dataclass
from rayrag.demo import DemoOptions

HELP = "the built-in end-to-end job: synthetic knowledge base -> fine-tuned RAG -> scores"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_args(p, DemoOptions, dash="-")


def run(args: argparse.Namespace) -> int:
    from rayrag.demo import format_report, run_demo

    report = run_demo(to_dataclass(DemoOptions, args), progress=not args.quiet)
    print(format_report(report))
    print(f"report written to {args.out / 'demo_report.json'}")
    return 0
