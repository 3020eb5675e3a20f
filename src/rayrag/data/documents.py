"""Read documents (JSONL, TSV, CSV, Parquet with `title` and `text`) and split them into passages.

Row-level problems (blank rows, empty text, undecodable bytes, malformed JSON) are skipped and
reported with file:line; file-level problems (missing file, missing columns, no documents at
all) raise a `RayragError` that names the file and the fix.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rayrag.errors import RayragError
from rayrag.text import SkippedRows, has_undecodable, json_lines, read_text, split_lines

log = logging.getLogger(__name__)

READ_FIX = "check the path given to --docs"
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Document:
    """One document: its title, its text, and where it came from (`file:line`)."""

    title: str
    text: str
    origin: str


@dataclass
class ReadReport:
    """What reading produced: counts, and one `file:line: reason` entry per skipped row."""

    files: int = 0
    documents: int = 0
    skipped: SkippedRows = field(default_factory=SkippedRows)


def _rows_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, dict | str]]:
    csv.field_size_limit(sys.maxsize)
    lines = split_lines(read_text(path, fix=READ_FIX), keepends=True)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    names = [h.strip().lower() for h in header]
    if "title" in names and "text" in names:
        columns = names
    elif delimiter == "\t" and len(header) == 2:
        # Headerless `title<TAB>text`, the format of the reference's own example knowledge base.
        columns = ["title", "text"]
        yield 1, dict(zip(columns, header))
    else:
        raise RayragError(
            f"{path}:1: the header has columns {header!r}, but `title` and `text` are required; "
            "add a header line naming them")
    for row in reader:
        lineno = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if any(has_undecodable(cell) for cell in row):
            yield lineno, "non-UTF-8 bytes"
            continue
        if len(row) != len(columns):
            yield lineno, f"{len(row)} fields where the header has {len(columns)}"
            continue
        yield lineno, dict(zip(columns, row))


def _rows_parquet(path: Path) -> Iterator[tuple[int, dict | str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise RayragError(f"{path}: not a readable Parquet file ({e}); re-export it") from e
    for lineno, row in enumerate(table.to_pylist(), start=1):
        yield lineno, row


def _rows(path: Path) -> Iterator[tuple[int, dict | str]]:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise RayragError(
            f"{path}: unknown document format {path.suffix!r}; use one of "
            f"{', '.join(sorted(FORMATS))}")
    if kind == "jsonl":
        return json_lines(read_text(path, fix=READ_FIX))
    if kind == "parquet":
        return _rows_parquet(path)
    return _rows_delimited(path, "\t" if kind == "tsv" else ",")


def read_documents(paths: Sequence[Path]) -> tuple[list[Document], ReadReport]:
    """Read every document of `paths`; rows that cannot be used are skipped and reported."""
    if not paths:
        raise RayragError("no document files given; pass one or more files to --docs")
    report = ReadReport()
    documents: list[Document] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise RayragError(f"{path}: no such file; check the path given to --docs")
        report.files += 1
        columns_seen = False
        for lineno, row in _rows(path):
            if isinstance(row, str):
                report.skipped.add(path, lineno, row)
                continue
            if "title" not in row or "text" not in row:
                if not columns_seen and path.suffix.lower() == ".parquet":
                    raise RayragError(
                        f"{path}: columns {sorted(row)} lack `title` and `text`; rename the columns")
                report.skipped.add(path, lineno, "missing `title` or `text`")
                continue
            columns_seen = True
            title = "" if row["title"] is None else str(row["title"]).strip()
            text = "" if row["text"] is None else " ".join(str(row["text"]).split())
            if not text:
                report.skipped.add(path, lineno, "empty text")
                continue
            documents.append(Document(title=title, text=text, origin=f"{path}:{lineno}"))
    report.documents = len(documents)
    if not documents:
        files = ", ".join(str(p) for p in paths)
        raise RayragError(
            f"{files}: no usable documents ({len(report.skipped)} rows skipped); each row needs a "
            "non-empty `text` and a `title`")
    report.skipped.log(log, "rows")
    return documents, report


def split_passages(text: str, words: int) -> list[str]:
    """Split `text` into passages of at most `words` whitespace-separated words; nothing is dropped."""
    if words < 1:
        raise ValueError(f"words per passage must be at least 1, got {words}")
    tokens = text.split()
    return [" ".join(tokens[i:i + words]) for i in range(0, len(tokens), words)]
