"""Run the embedded default job end to end on this machine, with no network and no data of yours.

Invents a knowledge base of fictional people and facts (so no model can know the answers),
indexes it with the packaged MiniLM encoder, assembles and fine-tunes a RAG-token model, and
scores it on questions about people never seen in training, against the model before training
and a closed-book generator trained the same way. Everything lands in --out: config.yaml (the
options; `rayrag demo --config OUT/config.yaml` reruns it), data/, kb/, model-init/, rag/ (the
run, with rag/best_model/), closed-book/, eval/, demo_report.json and demo_report.png (training
curve and the three models' scores).

Example:
  rayrag demo --out runs/demo --train_minutes 3
"""

from __future__ import annotations

from rayrag.cli.aliases import dashed, negations
from rayrag.tasks.demo import DemoOptions

HELP = "the built-in end-to-end job: synthetic knowledge base -> fine-tuned RAG -> scores"
OPTIONS = DemoOptions
ALIASES = {**dashed(DemoOptions), **negations(DemoOptions, dash=True)}  # --train-minutes, --no-overwrite


def run(opts: DemoOptions, quiet: bool) -> int:
    from rayrag.config import write_config
    from rayrag.tasks.demo import format_report, run_demo

    write_config(opts, opts.out)
    report = run_demo(opts, progress=not quiet)
    print(format_report(report))
    print(f"report written to {opts.out / 'demo_report.json'}")
    print(f"ask the fine-tuned model in a browser: rayrag serve --model {opts.out / 'rag' / 'best_model'}")
    return 0
