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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rayrag.data.qa import load_split
from rayrag.tasks.synthetic import make_corpus, write_corpus
from rayrag.errors import RayragError
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
    n_docs: int = 2
    """Passages retrieved per question."""
    train_minutes: float = 5.5
    """Training time budget of the RAG model (the closed-book model gets the same number of steps)."""
    train_batch_size: int = 16
    """Questions per training step."""
    learning_rate: float = 2e-4
    """Peak learning rate."""
    question_encoder_lr: float = 1e-5
    """Peak learning rate of the RAG model's question encoder: at the generator's rate it drifts away from
    the index's passage vectors within 40 steps and retrieval recall falls to nothing."""
    encoder_layers: int = 6
    """Encoder layers of the MiniLM-warm-started generator (the lowest of MiniLM's 6)."""
    decoder_layers: int = 6
    """Decoder layers of the MiniLM-warm-started generator."""
    val_every: int = 50
    """Validate (and keep the best model) every N training steps."""
    n_test: int = -1
    """Test questions scored (-1: all)."""
    overwrite: bool = True
    """Replace an earlier demo in --out."""

    def validate(self) -> None:
        """Check every flag; raise `RayragError` naming the flag. Changes nothing."""
        least = {"--entities": (self.entities, 3), "--n_docs": (self.n_docs, 1),
                 "--train_batch_size": (self.train_batch_size, 1), "--encoder_layers": (self.encoder_layers, 0),
                 "--decoder_layers": (self.decoder_layers, 0), "--val_every": (self.val_every, 1),
                 "--n_test": (self.n_test, -1), "--question_encoder_lr": (self.question_encoder_lr, 0)}
        for flag, (value, low) in least.items():
            if value < low:
                raise RayragError(f"{flag} {value}: must be at least {low}")
        for flag, value in (("--train_minutes", self.train_minutes), ("--learning_rate", self.learning_rate)):
            if not value > 0:
                raise RayragError(f"{flag} {value}: must be positive")

    def resolved(self) -> DemoOptions:
        """A new `DemoOptions`; nothing here has a default that depends on other flags."""
        return replace(self)


RAG_ONLY = ("n_docs", "question_encoder_lr", "max_time_minutes")
"""Settings of the RAG run that the closed-book run does without (it trains for as many steps as the RAG run)."""


def train_settings(opts: DemoOptions, rag: bool = True) -> dict:
    """The `rayrag train` options of the demo's RAG run (`rag=False`: of its closed-book run), paths and
    --do_train aside. `configs/demo.yaml` holds the RAG run's, for `rayrag train --config`; tests/test_configs.py
    checks that it equals these with the demo's defaults."""
    settings = dict(n_docs=opts.n_docs, train_batch_size=opts.train_batch_size, eval_batch_size=64,
                    learning_rate=opts.learning_rate, question_encoder_lr=opts.question_encoder_lr,
                    lr_scheduler="constant", warmup_steps=20, max_grad_norm=1.0, seed=opts.seed,
                    num_train_epochs=100, max_time_minutes=opts.train_minutes, max_target_length=16,
                    val_max_target_length=8, n_val=64, freeze_embeddings=True, dropout=0.0,
                    val_check_interval=float(opts.val_every))
    return settings if rag else {k: v for k, v in settings.items() if k not in RAG_ONLY}


def _evaluate(model_dir: Path, data_dir: Path, out: Path, n_test: int, tag: str, progress: bool) -> dict:
    examples = load_split(data_dir, "test", n_test)
    loaded = load_model(model_dir)
    preds = predict(loaded, [e.question for e in examples], batch_size=64, max_length=8, progress=progress)
    write_predictions(out, preds, examples, prefix=f"test_{tag}")
    return score(preds, examples)


def run_demo(opts: DemoOptions, progress: bool = True) -> dict:
    """Run the whole demo; returns (and writes to OUT/demo_report.json) its report."""
    from rayrag.kb.build import build
    from rayrag.kb.args import KbArgs
    from rayrag.model.assemble import init_model
    from rayrag.model.options import InitOptions
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
    init_model(InitOptions(out=out / "model-init", model_type="rag_token", n_docs=opts.n_docs,
                           max_combined_length=64, generator_encoder_layers=opts.encoder_layers,
                           generator_decoder_layers=opts.decoder_layers, seed=opts.seed, overwrite=True,
                           kb=KbArgs(path=kb_dir)))
    init_model(InitOptions(out=out / "closed-book-init", model_type="seq2seq",
                           generator_encoder_layers=opts.encoder_layers,
                           generator_decoder_layers=opts.decoder_layers, seed=opts.seed, overwrite=True,
                           kb=KbArgs(path=kb_dir)))
    before = _evaluate(out / "model-init", data_dir, out / "eval", opts.n_test, "before", progress)

    t0 = time.perf_counter()
    rag_metrics = train(TrainOptions(data_dir=data_dir, output_dir=out / "rag", model_name_or_path=out / "model-init",
                                     do_train=True, progress=progress, **train_settings(opts)))
    train_seconds = time.perf_counter() - t0
    steps = rag_metrics["train_steps"]
    cb_metrics = train(TrainOptions(data_dir=data_dir, output_dir=out / "closed-book",
                                    model_name_or_path=out / "closed-book-init", do_train=True, progress=progress,
                                    max_steps=steps, **train_settings(opts, rag=False)))
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
    plot_report(report, out / "rag" / "logs" / "metrics.csv", out / "demo_report.png")
    return report


def plot_report(report: dict, metrics_csv: Path, path: Path) -> None:
    """Two panels: the RAG training loss (and validation EM) over steps, and test EM/F1 per model."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses, val_steps, val_em = [], [], [], []
    if metrics_csv.is_file():
        with open(metrics_csv, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("train_loss_step"):
                    steps.append(int(row["step"]))
                    losses.append(float(row["train_loss_step"]))
                if row.get("val_em"):
                    val_steps.append(int(row["step"]))
                    val_em.append(float(row["val_em"]))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(steps, losses, color="tab:blue", label="training loss")
    a.set_xlabel("step")
    a.set_ylabel("loss (NLL per question)")
    a.set_title("RAG fine-tuning")
    if val_em:
        a2 = a.twinx()
        a2.plot(val_steps, val_em, "o-", color="tab:green", label="validation EM")
        a2.set_ylabel("validation EM")
        a2.set_ylim(0, 1)
        a2.legend(loc="center right")
    a.legend(loc="upper right")
    names = ["RAG before\nfine-tuning", "closed-book\ngenerator", "RAG\nfine-tuned"]
    em = [report["em_before"], report["em_closed_book"], report["em_rag"]]
    f1 = [report["f1_before"], report["f1_closed_book"], report["f1_rag"]]
    x = range(len(names))
    b.bar([i - 0.2 for i in x], em, width=0.4, label="EM")
    b.bar([i + 0.2 for i in x], f1, width=0.4, label="F1")
    for i, v in enumerate(em):
        b.text(i - 0.2, v + 0.01, f"{v:.2f}", ha="center", fontsize=9)
    b.set_xticks(list(x), names)
    b.set_ylim(0, 1.05)
    b.set_title(f"test: {report['n_test']} questions about unseen entities")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
