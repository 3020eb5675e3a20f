"""QA split readers: aligned .source/.target, JSONL, and their bad inputs."""

from __future__ import annotations

import pytest

from rayrag.data.qa import QAExample, load_split
from rayrag.errors import RayragError


def test_aligned_files_with_multiple_answers_titles_blank_lines_and_bom(tmp_path):
    (tmp_path / "train.source").write_bytes(b"\xef\xbb\xbfq1?\n\nq3?\nq4 \xff?\n")
    (tmp_path / "train.target").write_text("a1\ta1b\nx\na3\na4\n", encoding="utf-8")
    (tmp_path / "train.titles").write_text("T1\nT2\nT3\tT3b\nT4\n", encoding="utf-8")
    assert load_split(tmp_path, "train") == [QAExample("q1?", ("a1", "a1b"), ("T1",)),
                                            QAExample("q3?", ("a3",), ("T3", "T3b"))]
    assert load_split(tmp_path, "train", limit=1) == [QAExample("q1?", ("a1", "a1b"), ("T1",))]


def test_mismatched_line_counts_are_refused(tmp_path):
    (tmp_path / "val.source").write_text("q1\nq2\n", encoding="utf-8")
    (tmp_path / "val.target").write_text("a1\n", encoding="utf-8")
    with pytest.raises(RayragError, match=r"val\.source has 2 lines but .*val\.target has 1"):
        load_split(tmp_path, "val")


def test_missing_target_missing_split_and_all_blank(tmp_path):
    (tmp_path / "test.source").write_text("q\n", encoding="utf-8")
    with pytest.raises(RayragError, match=r"test\.target: missing"):
        load_split(tmp_path, "test")
    with pytest.raises(RayragError, match="no train.source/train.target or train.jsonl"):
        load_split(tmp_path, "train")
    (tmp_path / "val.source").write_text("\n\n", encoding="utf-8")
    (tmp_path / "val.target").write_text("\n\n", encoding="utf-8")
    with pytest.raises(RayragError, match=r"val\.source: no usable examples \(2 skipped\)"):
        load_split(tmp_path, "val")
    with pytest.raises(RayragError, match="no such directory"):
        load_split(tmp_path / "nope", "train")


def test_jsonl_split(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        '{"question": "q1", "answers": ["a", "b"], "titles": ["T"]}\n\n{"question": "q2", "answers": "c"}\n'
        '{"question": "q3"}\n', encoding="utf-8")
    assert load_split(tmp_path, "train") == [QAExample("q1", ("a", "b"), ("T",)), QAExample("q2", ("c",), ())]
