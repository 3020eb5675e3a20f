"""`rayrag demo` end to end at a small size: every stage runs and the report holds what it promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import rayrag

pytestmark = pytest.mark.slow  # the whole demo: index, init-model, two trainings, eval


def test_demo_small(tmp_path):
    out = tmp_path / "demo"
    proc = rayrag("demo", "--out", out, "--entities", "12", "--train-minutes", "0.15", "--encoder-layers", "1",
                  "--decoder-layers", "1",
                  "--quiet")
    report = json.loads((out / "demo_report.json").read_text())
    for key in ("em_rag", "f1_rag", "em_before", "em_closed_book", "retrieval_recall_at_k", "train_seconds"):
        assert isinstance(report[key], float), key
    assert report["n_test"] == 10  # 2 test entities x 5 facts
    assert report["train_steps"] >= 1
    assert report["retrieval_recall_at_k"] >= 0.8  # the packaged MiniLM finds the fact's passage
    for path in ("data/train.source", "data/test.target", "kb/manifest.json", "model-init/rayrag.json",
                 "rag/best_model/config.json", "closed-book/best_model/config.json",
                 "eval/test_rag_generations.txt", "demo_report.png"):
        assert (out / path).is_file(), path
    assert "RAG fine-tuned" in proc.stdout and "closed-book generator" in proc.stdout
    served = re.search(r"rayrag serve --model (\S+)", proc.stdout)  # the line that serves the fine-tuned model
    assert served and (Path(served.group(1)) / "config.json").is_file(), proc.stdout
