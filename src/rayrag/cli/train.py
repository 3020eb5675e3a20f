"""Fine-tune a RAG model with PyTorch Lightning.

Accepts the flags of the reference fine-tuning script (finetune_rag.py), so an existing
command line runs unchanged, plus Lightning's --accelerator/--devices. With --devices N > 1
it runs N DDP processes (gloo on CPU). Retrieval comes from --distributed_retriever:
`local` (each process maps the index), `pytorch` (rank 0 serves all) or `ray` (an actor pool,
tuned with --pool.*; --retrieval_timeout_s and --retrieval_max_restarts are
--pool.call_timeout_s and --pool.max_restarts).

Writes to --output_dir: config.yaml (the resolved options: `rayrag train --config
OUTPUT_DIR/config.yaml` reruns the run), checkpoints/{best,last}.ckpt (resumable with
--resume), best_model/ (a Hugging Face directory), logs/metrics.csv, tensorboard/, and with
--do_predict test_generations.txt, test_predictions.jsonl and metrics.json.

Example:
  rayrag train --data_dir data/ --output_dir runs/x --model_name_or_path model-init/ \\
      --do_train --do_predict --train_batch_size 8 --learning_rate 1e-4 --num_train_epochs 3
  rayrag train --config runs/x/config.yaml --resume
"""

from __future__ import annotations

import dataclasses
import json

from rayrag.cli.aliases import negations
from rayrag.train.options import TrainOptions

HELP = "fine-tune a RAG model (Lightning; local, pytorch or ray retrieval)"
OPTIONS = TrainOptions
RETRIEVAL_ALIASES = {"--retrieval_timeout_s": "--pool.call_timeout_s", "--retrieval_max_restarts": "--pool.max_restarts"}
"""Older spellings of two pool settings, for every verb that trains (train, tune)."""
ALIASES = {
    **negations(TrainOptions),  # --no-progress, --no-fp16, ... (argparse's BooleanOptionalAction)
    **RETRIEVAL_ALIASES,
}


def run(opts: TrainOptions, quiet: bool) -> int:
    from rayrag.train.run import train

    metrics = train(dataclasses.replace(opts, progress=opts.progress and not quiet))
    if metrics:
        print(json.dumps(metrics, indent=2))
    return 0
