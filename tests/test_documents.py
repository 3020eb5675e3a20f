"""Document readers and passage splitting: every format, and every kind of bad row."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayrag.data.documents import read_documents, split_passages
from rayrag.errors import RayragError


def test_jsonl_with_bom_blank_lines_bad_bytes_and_empty_text(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [json.dumps({"title": "A", "text": "alpha beta"}), "", json.dumps({"title": "B", "text": "   "}),
            "{not json", json.dumps({"title": "C"}), json.dumps({"title": "D", "text": "delta"})]
    data = b"\xef\xbb\xbf" + "\n".join(rows).encode() + b"\n" + b'{"title": "E", "text": "bad \xff byte"}\n'
    path.write_bytes(data)
    docs, report = read_documents([path])
    assert [(d.title, d.text) for d in docs] == [("A", "alpha beta"), ("D", "delta")]
    assert docs[0].origin == f"{path}:1"
    assert report.skipped == [f"{path}:3: empty text", f"{path}:4: not valid JSON (Expecting property name "
                              "enclosed in double quotes)", f"{path}:5: missing `title` or `text`",
                              f"{path}:7: non-UTF-8 bytes"]


def test_csv_tsv_headerless_tsv_and_parquet(tmp_path):
    (tmp_path / "a.csv").write_text('title,text\nX,"one, two"\nY,three\n', encoding="utf-8")
    (tmp_path / "b.tsv").write_text("text\ttitle\nfour\tZ\n", encoding="utf-8")
    (tmp_path / "c.tsv").write_text("W\tfive six\n", encoding="utf-8")
    pq.write_table(pa.table({"title": ["P", None], "text": ["seven", "eight"]}), tmp_path / "d.parquet")
    docs, report = read_documents([tmp_path / n for n in ("a.csv", "b.tsv", "c.tsv", "d.parquet")])
    assert [(d.title, d.text) for d in docs] == [("X", "one, two"), ("Y", "three"), ("Z", "four"),
                                                 ("W", "five six"), ("P", "seven"), ("", "eight")]
    assert report.files == 4 and report.documents == 6 and report.skipped == []


def test_missing_columns_names_the_file(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("name,body\nA,text\n", encoding="utf-8")
    with pytest.raises(RayragError, match=r"docs\.csv:1: .*`title` and `text` are required"):
        read_documents([path])
    pq.write_table(pa.table({"name": ["A"]}), tmp_path / "p.parquet")
    with pytest.raises(RayragError, match=r"p\.parquet: columns \['name'\] lack `title` and `text`"):
        read_documents([tmp_path / "p.parquet"])


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(RayragError, match="nope.jsonl: no such file"):
        read_documents([tmp_path / "nope.jsonl"])
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(RayragError, match="empty.jsonl: no usable documents"):
        read_documents([tmp_path / "empty.jsonl"])
    (tmp_path / "x.docx").write_text("x", encoding="utf-8")
    with pytest.raises(RayragError, match=r"x\.docx: unknown document format '\.docx'"):
        read_documents([tmp_path / "x.docx"])


def test_one_megabyte_document_is_split_not_truncated(tmp_path):
    words = [f"w{i}" for i in range(150_000)]  # about 1 MB of text
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"title": "Big", "text": " ".join(words)}) + "\n", encoding="utf-8")
    assert path.stat().st_size > 1_000_000
    docs, _ = read_documents([path])
    passages = split_passages(docs[0].text, 100)
    assert len(passages) == 1500
    assert all(len(p.split()) == 100 for p in passages)
    assert " ".join(passages).split() == words


def test_split_passages_keeps_remainder():
    assert split_passages("a b c d e", 2) == ["a b", "c d", "e"]
    with pytest.raises(ValueError):
        split_passages("a", 0)
