"""Fine-tune a RAG model with PyTorch Lightning.

Accepts the flags of the reference fine-tuning script (finetune_rag.py), so an existing
command line runs unchanged, plus Lightning's --accelerator/--devices. With --devices N > 1
it runs N DDP processes (gloo on CPU). Options come in groups shared with the other verbs:
--kb.* (the knowledge base; --kb DIR, or the reference's --passages_path/--index_path),
--retrieval.* (the backend: `local` maps the index in each process, `pytorch` has rank 0
serve all, `ray` an actor pool tuned with --retrieval.pool.*; the reference's
--distributed_retriever and --num_retrieval_workers work as before) and --cluster.* (the Ray
cluster: --ray_address is --cluster.address). Measured settings ship as recipes:
`--config configs/realtext.yaml`.

With --launcher ray, Ray Train starts the training workers on any node of the Ray cluster at
--cluster.address (TorchTrainer with Ray's Lightning integration): --cluster.workers of them
(default --devices or --gpus; the older --num_workers still counts them), each asking for
--cluster.cpus_per_worker CPUs (and one GPU with --cluster.use_gpu); a job the cluster cannot
hold is refused with the fix. A worker that dies is restarted up to --max_failures times from
the last checkpoint reported to Ray Train, in --output_dir/ray_train/. Paths must be on storage
every node shares.

Writes to --output_dir: config.yaml (the resolved options: `rayrag train --config
OUTPUT_DIR/config.yaml` reruns the run), checkpoints/{best,last}.ckpt (resumable with
--resume), best_model/ (a Hugging Face directory), logs/metrics.csv, tensorboard/, and with
--do_predict test_generations.txt, test_predictions.jsonl and metrics.json.

Example:
  rayrag train --data_dir data/ --output_dir runs/x --model_name_or_path model-init/ \\
      --do_train --do_predict --train_batch_size 8 --learning_rate 1e-4 --num_train_epochs 3
  rayrag train --config runs/x/config.yaml --resume
  rayrag train --data_dir /shared/data --output_dir /shared/runs/y --model_name_or_path /shared/model \\
      --do_train --launcher ray --cluster.workers 4 --cluster.use_gpu --cluster.address auto --retrieval.backend ray
"""

from __future__ import annotations

import dataclasses
import json

from rayrag.cli.aliases import negations, part_spellings
from rayrag.train.options import TrainOptions

HELP = "fine-tune a RAG model (Lightning, or Ray Train on a cluster; local, pytorch or ray retrieval)"
OPTIONS = TrainOptions
ALIASES = {
    **part_spellings(TrainOptions),  # --kb, --passages_path, --distributed_retriever, --ray_address, --pool.*, ...
    **negations(TrainOptions),  # --no-progress, --no-fp16, ... (argparse's BooleanOptionalAction)
    "--end2end": "--train_context_encoder",  # rag-end2end-retriever's spellings
    "--indexing_freq": "--reindex_every",
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
