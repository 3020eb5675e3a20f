"""EM and F1 with SQuAD normalisation, and retrieval precision/recall, on known cases."""

from __future__ import annotations

import pytest

from rayrag.evaluate.metrics import answer_metrics, exact_match, f1_score, normalize_answer, retrieval_metrics


def test_normalisation():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple, a pear") == "apple pear"


def test_exact_match_takes_best_gold():
    assert exact_match("the Velmora", ["velmora"]) == 1.0
    assert exact_match("Velmor", ["velmora", "x"]) == 0.0
    assert exact_match("x", ["velmora", "X."]) == 1.0


def test_f1_known_values():
    assert f1_score("drunweth mills", ["Drunweth Mills"]) == 1.0
    assert f1_score("drunweth", ["Drunweth Mills"]) == pytest.approx(2 / 3)
    assert f1_score("x b c", ["c d", "b c"]) == pytest.approx(0.8)
    assert f1_score("a b c", ["b c"]) == 1.0  # "a" is an article
    assert f1_score("", ["x"]) == 0.0
    assert answer_metrics(["a", "b c"], [["a"], ["c"]]) == {"em": 0.5, "f1": pytest.approx((1 + 2 / 3) / 2)}


def test_retrieval_metrics():
    got = retrieval_metrics([["A", "B"], ["C", "D"], ["E", "F"]], [["B"], ["X"], []], k=2)
    assert got == {"precision_at_2": 0.25, "recall_at_2": 0.5}
    assert retrieval_metrics([["A"]], [[]], k=1) == {}
