"""The embedded default job: a synthetic knowledge base, a RAG model fine-tuned on it, and its scores.

Steps: invent entities and facts -> `index` them with the packaged MiniLM -> `init-model` a
RAG-token model (MiniLM question encoder, MiniLM-warm-started encoder-decoder generator) ->
score it before training -> `train` -> score it after, against a closed-book generator trained
the same way. Test questions ask about entities never seen in training, so only retrieval can
answer them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rayrag.data.qa import load_split
from rayrag.data.synthetic import make_corpus, write_corpus
from rayrag.evaluate.predict import predict, score, write_predictions
from rayrag.model.checkpoint import load_model

log = logging.getLogger(__name__)


@dataclass
class DemoOptions:
    """Options of `rayrag demo`."""

    out: Path = Path("runs/demo")
    """Directory for everything the demo makes."""
    entities: int = 400
    """Invented entities (5 facts each; 80% train, 10% val, 10% test by entity)."""
    seed: int = 0
    """Seed for the corpus, the model and training."""
    n_docs: int = 3
    """Passages retrieved per question."""
    train_minutes: float = 4.0
    """Training time budget of the RAG model (the closed-book model gets the same number of steps)."""
    train_batch_size: int = 8
    """Questions per training step."""
    learning_rate: float = 1e-4
    """Peak learning rate."""
    decoder_layers: int = 6
    """Decoder layers of the MiniLM-warm-started generator."""
    n_test: int = -1
    """Test questions scored (-1: all)."""
    overwrite: bool = True
    """Replace an earlier demo in --out."""


def _evaluate(model_dir: Path, data_dir: Path, out: Path, n_test: int, tag: str, progress: bool) -> dict:
    examples = load_split(data_dir, "test", n_test)
    loaded = load_model(model_dir)
    preds = predict(loaded, [e.question for e in examples], batch_size=32, max_length=16, progress=progress)
    write_predictions(out, preds, examples, prefix=f"test_{tag}")
    return score(preds, examples)


def run_demo(opts: DemoOptions, progress: bool = True) -> dict:
    """Run the whole demo; returns (and writes to OUT/demo_report.json) its report."""
    from rayrag.kb.build import build
    from rayrag.model.assemble import InitOptions, init_model
    from rayrag.train.options import TrainOptions
    from rayrag.train.run import train

    t_start = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir, kb_dir = out / "data", out / "kb"
    corpus = make_corpus(opts.entities, seed=opts.seed)
    write_corpus(corpus, out / "documents.jsonl", data_dir)
    log.info("invented %d entities: %d documents, %s questions", opts.entities, len(corpus.documents),
             {k: len(v) for k, v in corpus.splits.items()})

    build([out / "documents.jsonl"], kb_dir, overwrite=opts.overwrite, progress=progress)
    init_model(InitOptions(out=out / "model-init", model_type="rag_token", kb=kb_dir, n_docs=opts.n_docs,
                           max_combined_length=64, generator_decoder_layers=opts.decoder_layers,
                           seed=opts.seed, overwrite=True))
    init_model(InitOptions(out=out / "closed-book-init", model_type="seq2seq", kb=kb_dir,
                           generator_decoder_layers=opts.decoder_layers, seed=opts.seed, overwrite=True))
    before = _evaluate(out / "model-init", data_dir, out / "eval", opts.n_test, "before", progress)

    common = dict(data_dir=data_dir, do_train=True, train_batch_size=opts.train_batch_size,
                  eval_batch_size=32, learning_rate=opts.learning_rate, lr_scheduler="constant",
                  warmup_steps=20, max_grad_norm=1.0, seed=opts.seed, num_train_epochs=100,
                  max_target_length=16, val_max_target_length=16, n_val=100, freeze_embeddings=True,
                  progress=progress)
    t0 = time.perf_counter()
    rag_metrics = train(TrainOptions(output_dir=out / "rag", model_name_or_path=out / "model-init",
                                     max_time_minutes=opts.train_minutes, val_check_interval=0.5, **common))
    train_seconds = time.perf_counter() - t0
    steps = rag_metrics["train_steps"]
    cb_metrics = train(TrainOptions(output_dir=out / "closed-book", model_name_or_path=out / "closed-book-init",
                                    max_steps=steps, val_check_interval=0.5, **common))
    after = _evaluate(out / "rag" / "best_model", data_dir, out / "eval", opts.n_test, "rag", progress)
    closed = _evaluate(out / "closed-book" / "best_model", data_dir, out / "eval", opts.n_test, "closed_book",
                       progress)
    k = opts.n_docs
    report = {
        "em_rag": after["em"], "f1_rag": after["f1"],
        "em_before": before["em"], "f1_before": before["f1"],
        "em_closed_book": closed["em"], "f1_closed_book": closed["f1"],
        "retrieval_recall_at_k": after.get(f"recall_at_{k}"),
        "retrieval_recall_at_k_before": before.get(f"recall_at_{k}"),
        "retrieval_precision_at_k": after.get(f"precision_at_{k}"),
        "k": k, "n_test": after["n"], "train_steps": steps, "train_seconds": train_seconds,
        "closed_book_train_seconds": cb_metrics.get("train_seconds"),
        "total_seconds": time.perf_counter() - t_start,
        "options": {key: str(v) for key, v in asdict(opts).items()},
    }
    (out / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def format_report(report: dict) -> str:
    """The report as the table `rayrag demo` prints."""
    k = report["k"]
    rows = [("RAG before fine-tuning", report["em_before"], report["f1_before"],
             report["retrieval_recall_at_k_before"]),
            ("closed-book generator", report["em_closed_book"], report["f1_closed_book"], None),
            ("RAG fine-tuned", report["em_rag"], report["f1_rag"], report["retrieval_recall_at_k"])]
    lines = [f"{'model':<26}{'EM':>8}{'F1':>8}{f'recall@{k}':>11}", "-" * 53]
    for name, em, f1, rec in rows:
        lines.append(f"{name:<26}{em:>8.3f}{f1:>8.3f}{'' if rec is None else f'{rec:.3f}':>11}")
    lines.append(f"\n{report['n_test']} test questions about unseen entities; {report['train_steps']} training "
                 f"steps in {report['train_seconds']:.0f} s; whole demo {report['total_seconds']:.0f} s")
    return "\n".join(lines)
