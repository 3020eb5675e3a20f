"""Answer questions with a loaded model and score the answers: the core of `eval`, `ask` and `--do_predict`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rayrag.data.qa import QAExample
from rayrag.evaluate.metrics import answer_metrics, retrieval_metrics
from rayrag.model.checkpoint import LoadedModel
from rayrag.model.decode import decode_answers



@dataclass
class Prediction:
    """A generated answer and, for RAG models, the passages it was generated from (best first)."""

    question: str
    answer: str
    passages: list[dict] = field(default_factory=list)


@torch.no_grad()
def predict(loaded: LoadedModel, questions: Sequence[str], *, batch_size: int = 16, num_beams: int = 1,
            max_length: int = 25, n_docs: int | None = None, max_source_length: int = 128,
            progress: bool = True) -> list[Prediction]:
    """Generate an answer for each question; RAG predictions carry their retrieved passages with scores.

    A RAG model retrieves through its own retriever inside `generate`, exactly as in training and
    validation; the passages reported are those of the batch's retrieval (`RayragRetriever.capture`: the first
    call of `generate`, for RAG-token and RAG-sequence alike)."""
    model, qtok, gtok = loaded.model, loaded.question_tokenizer, loaded.generator_tokenizer
    model.eval()
    device = next(model.parameters()).device
    is_rag = loaded.info.is_rag
    k = n_docs or (model.config.n_docs if is_rag else 0)
    if is_rag:
        loaded.retriever.client.check_k(k)
    out: list[Prediction] = []
    bar = tqdm(total=len(questions), desc="answering", unit="q", disable=not progress)
    for start in range(0, len(questions), batch_size):
        batch = list(questions[start:start + batch_size])
        enc = qtok(batch, truncation=True, max_length=max_source_length, padding=True, return_tensors="pt").to(device)
        kwargs = {"n_docs": k} if is_rag else {}
        with loaded.retriever.capture() if is_rag else contextlib.nullcontext([]) as calls:
            ids = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 num_beams=num_beams, max_length=max_length, **kwargs)
        answers = decode_answers(gtok, ids)
        r = calls[0] if calls else None
        for i, (q, a) in enumerate(zip(batch, answers)):
            passages = [] if r is None else [
                {"id": int(r.ids[i, j]), "score": float(r.scores[i, j]), "title": r.titles[i][j], "text": r.texts[i][j]}
                for j in range(k)]
            out.append(Prediction(q, a, passages))
        bar.update(len(batch))
    bar.close()
    return out


def score(predictions: Sequence[Prediction], examples: Sequence[QAExample]) -> dict[str, float]:
    """EM/F1 against the gold answers; precision@k/recall@k where gold titles are given."""
    metrics = answer_metrics([p.answer for p in predictions], [e.answers for e in examples])
    if predictions and predictions[0].passages:
        k = len(predictions[0].passages)
        metrics.update(retrieval_metrics([[d["title"] for d in p.passages] for p in predictions],
                                         [e.titles for e in examples], k))
    metrics["n"] = len(predictions)
    return metrics


def write_predictions(out_dir: Path, predictions: Sequence[Prediction], examples: Sequence[QAExample],
                      prefix: str = "test") -> None:
    """`PREFIX_generations.txt` (one answer per line, as the reference) and `PREFIX_predictions.jsonl`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{prefix}_generations.txt").write_text("".join(p.answer.replace("\n", " ") + "\n"
                                                              for p in predictions), encoding="utf-8")
    with open(out_dir / f"{prefix}_predictions.jsonl", "w", encoding="utf-8") as f:
        for p, e in zip(predictions, examples):
            f.write(json.dumps({"question": p.question, "prediction": p.answer, "answers": list(e.answers),
                                "passages": [{k: d[k] for k in ("id", "score", "title")} for d in p.passages]})
                    + "\n")
