"""Fine-tune a RAG model with PyTorch Lightning.

Accepts the flags of the reference fine-tuning script (finetune_rag.py), so an existing
command line runs unchanged, plus Lightning's --accelerator/--devices. With --devices N > 1
it runs N DDP processes (gloo on CPU). Retrieval comes from --distributed_retriever:
`local` (each process maps the index), `pytorch` (rank 0 serves all) or `ray` (an actor pool,
tuned with --pool.*; --retrieval_timeout_s and --retrieval_max_restarts are
--pool.call_timeout_s and --pool.max_restarts).

With --launcher ray, Ray Train starts the training workers on any node of the Ray cluster at
--ray_address (TorchTrainer with Ray's Lightning integration): --num_workers is then the Ray
Train worker count (0: --devices or --gpus), each asking for --cpus_per_worker CPUs (and one GPU
with --use_gpu); a job the cluster cannot hold is refused with the fix. A worker that dies is
restarted up to --max_failures times from the last checkpoint reported to Ray Train, in
--output_dir/ray_train/. Paths must be on storage every node shares.

Writes to --output_dir: config.yaml (the resolved options: `rayrag train --config
OUTPUT_DIR/config.yaml` reruns the run), checkpoints/{best,last}.ckpt (resumable with
--resume), best_model/ (a Hugging Face directory), logs/metrics.csv, tensorboard/, and with
--do_predict test_generations.txt, test_predictions.jsonl and metrics.json.

Example:
  rayrag train --data_dir data/ --output_dir runs/x --model_name_or_path model-init/ \\
      --do_train --do_predict --train_batch_size 8 --learning_rate 1e-4 --num_train_epochs 3
  rayrag train --config runs/x/config.yaml --resume
  rayrag train --data_dir /shared/data --output_dir /shared/runs/y --model_name_or_path /shared/model \\
      --do_train --launcher ray --num_workers 4 --use_gpu --ray_address auto --distributed_retriever ray
"""

from __future__ import annotations

import dataclasses
import json

from rayrag.cli.aliases import negations
from rayrag.train.options import TrainOptions

HELP = "fine-tune a RAG model (Lightning, or Ray Train on a cluster; local, pytorch or ray retrieval)"
OPTIONS = TrainOptions
RETRIEVAL_ALIASES = {"--retrieval_timeout_s": "--pool.call_timeout_s", "--retrieval_max_restarts": "--pool.max_restarts"}
"""Older spellings of two pool settings, for every verb that trains (train, tune)."""
ALIASES = {
    **negations(TrainOptions),  # --no-progress, --no-fp16, ... (argparse's BooleanOptionalAction)
    **RETRIEVAL_ALIASES,
}


def run(opts: TrainOptions, quiet: bool) -> int:
    if opts.launcher == "ray":
        from rayrag.train.ray_launch import train_on_ray as train
    else:
        from rayrag.train.run import train

    metrics = train(dataclasses.replace(opts, progress=opts.progress and not quiet))
    if metrics:
        print(json.dumps(metrics, indent=2))
    return 0
