"""Fine-tune a RAG model with PyTorch Lightning.

Accepts the flags of the reference fine-tuning script (finetune_rag.py), so an existing
command line runs unchanged, plus Lightning's --accelerator/--devices. With --devices N > 1
it runs N DDP processes (gloo on CPU). Retrieval comes from --distributed_retriever:
`local` (each process maps the index), `pytorch` (rank 0 serves all) or `ray` (an actor pool).

Writes to --output_dir: checkpoints/{best,last}.ckpt (resumable with --resume), best_model/
(a Hugging Face directory), logs/metrics.csv, tensorboard/, and with --do_predict
test_generations.txt, test_predictions.jsonl and metrics.json.

Example:
  rayrag train --data_dir data/ --output_dir runs/x --model_name_or_path model-init/ \\
      --do_train --do_predict --train_batch_size 8 --learning_rate 1e-4 --num_train_epochs 3
"""

from __future__ import annotations

import argparse
import json

from rayrag.cli.args import add_dataclass_args, to_dataclass
from rayrag.train.options import TrainOptions

HELP = "fine-tune a RAG model (Lightning; local, pytorch or ray retrieval)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_args(p, TrainOptions)


def run(args: argparse.Namespace) -> int:
    from rayrag.train.run import train

    opts = to_dataclass(TrainOptions, args)
    opts.progress = opts.progress and not args.quiet
    metrics = train(opts)
    if metrics:
        print(json.dumps(metrics, indent=2))
    return 0
