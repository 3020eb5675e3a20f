"""`rayrag.text`: decoding user text, line numbers, JSON Lines and skipped-row reports."""

from __future__ import annotations

import logging

import pytest

from rayrag.errors import RayragError
from rayrag.text import SkippedRows, decode_text, has_undecodable, json_lines, numbered_lines, read_text, split_lines


def test_decoding_bom_bad_bytes_and_line_numbers(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\n\ntwo \xff\nthree")
    text = read_text(path)
    assert list(numbered_lines(text)) == [(1, "one"), (2, ""), (3, "two \udcff"), (4, "three")]
    assert [has_undecodable(line) for _, line in numbered_lines(text)] == [False, False, True, False]
    assert split_lines("a\r\nb\n", keepends=True) == ["a\r\n", "b\n"]
    assert split_lines("a\n\n") == ["a", ""] and split_lines("") == []
    assert split_lines("x\u2028y\n") == ["x\u2028y"]  # only \n ends a line: JSON may hold U+2028
    assert decode_text(b"caf\xc3\xa9") == "caf\u00e9" and not has_undecodable("caf\u00e9")
    with pytest.raises(RayragError, match=r"nope\.txt: cannot read .*; check --data_dir"):
        read_text(tmp_path / "nope.txt", fix="check --data_dir")


def test_json_lines_reasons():
    text = decode_text(b'{"a": 1}\n\n[1]\n{bad\n{"b": "\xff"}\n')
    assert list(json_lines(text)) == [(1, {"a": 1}), (3, "not a JSON object"),
                                      (4, "not valid JSON (Expecting property name enclosed in double quotes)"),
                                      (5, "non-UTF-8 bytes")]


def test_skipped_rows_report(caplog):
    skipped = SkippedRows()
    for line in range(1, 26):
        skipped.add("docs.jsonl", line, "empty text")
    skipped.add("docs.parquet", None, "unreadable")
    assert skipped[0] == "docs.jsonl:1: empty text" and skipped[-1] == "docs.parquet: unreadable"
    assert skipped[:1] == ["docs.jsonl:1: empty text"] and len(skipped) == 26
    logger = logging.getLogger("test_io")
    with caplog.at_level(logging.WARNING, logger="test_io"):
        skipped.log(logger, "examples")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:20] == [f"skipped docs.jsonl:{i}: empty text" for i in range(1, 21)]
    assert messages[20:] == ["... and 6 more skipped examples"]
