"""Evaluate a model on a split: EM and F1 (SQuAD normalisation, best over gold answers), and
retrieval precision@k / recall@k when gold passage titles are given (SPLIT.titles or a
`titles` field in JSONL). Writes SPLIT_generations.txt, SPLIT_predictions.jsonl,
SPLIT_metrics.json and SPLIT_config.yaml (the options; `rayrag eval --config FILE` reruns it)
to --out (default: the model directory's eval/).

Example:
  rayrag eval --model runs/x/best_model --data_dir data/ --split test --n_docs 5
"""

from __future__ import annotations

import json

from rayrag.cli.aliases import part_spellings
from rayrag.evaluate.options import EvalOptions

HELP = "score a model: EM/F1, retrieval precision@k and recall@k, predictions file"
OPTIONS = EvalOptions
ALIASES = part_spellings(EvalOptions)  # --kb, --passages_path, --index_path, --distributed_retriever, --ray_address


def run(opts: EvalOptions, quiet: bool) -> int:
    from rayrag.config import write_config
    from rayrag.data.qa import load_split
    from rayrag.evaluate.loading import answering
    from rayrag.evaluate.predict import predict, score, write_predictions

    examples = load_split(opts.data_dir, opts.split, opts.n)
    with answering(opts.model, opts.kb, opts.retrieval, opts.cluster, opts.model_type) as loaded:
        write_config(opts, opts.out, name=f"{opts.split}_config.yaml")
        preds = predict(loaded, [e.question for e in examples], batch_size=opts.batch_size, num_beams=opts.num_beams,
                        max_length=opts.max_length, n_docs=opts.n_docs, progress=not quiet)
    metrics = score(preds, examples)
    write_predictions(opts.out, preds, examples, prefix=opts.split)
    (opts.out / f"{opts.split}_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(metrics, indent=2))
    print(f"predictions and metrics written to {opts.out}")
    return 0
