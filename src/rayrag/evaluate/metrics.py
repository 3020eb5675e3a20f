"""Answer metrics (SQuAD normalisation: EM and token F1, max over gold answers) and retrieval metrics."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, fold white space (SQuAD's rule)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, gold: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in gold))


def _f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, gold: Sequence[str]) -> float:
    """Token-overlap F1 against the best-matching gold answer."""
    return max((_f1(prediction, g) for g in gold), default=0.0)


def answer_metrics(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean EM and F1 over examples: {"em": ..., "f1": ...}."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} examples")
    n = max(1, len(predictions))
    return {"em": sum(exact_match(p, g) for p, g in zip(predictions, golds)) / n,
            "f1": sum(f1_score(p, g) for p, g in zip(predictions, golds)) / n}


def retrieval_metrics(retrieved_titles: Sequence[Sequence[str]], gold_titles: Sequence[Sequence[str]],
                      k: int) -> dict[str, float]:
    """precision@k (share of the top-k passages whose title is gold) and recall@k (share of questions
    with a gold passage in the top k), over the examples that have gold titles."""
    pairs = [(r[:k], set(g)) for r, g in zip(retrieved_titles, gold_titles) if g]
    if not pairs:
        return {}
    precision = sum(sum(t in g for t in r) / k for r, g in pairs) / len(pairs)
    recall = sum(any(t in g for t in r) for r, g in pairs) / len(pairs)
    return {f"precision_at_{k}": precision, f"recall_at_{k}": recall}
