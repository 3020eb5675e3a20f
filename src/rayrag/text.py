"""Reading user text (documents, QA splits): decoding, lines, JSON Lines, and skipped-row reports.

`read_text` strips a BOM and decodes UTF-8 with undecodable bytes kept as lone surrogates (see
`has_undecodable`); `split_lines`/`numbered_lines` number lines as an editor does; `json_lines`
yields each object line or why it is not one; `SkippedRows` is the `file:line: reason` report of the
rows a reader could not use.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from rayrag.errors import RayragError

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"
LOGGED_SKIPS = 20
"""How many skipped rows `SkippedRows.log` lists one by one; the rest are counted."""

def decode_text(raw: bytes) -> str:
    """UTF-8 text of `raw` without a leading BOM; undecodable bytes become lone surrogates
    (`surrogateescape`), so one bad row does not make the whole file unreadable."""
    if raw.startswith(BOM):
        raw = raw[len(BOM):]
    return raw.decode("utf-8", errors="surrogateescape")


def read_text(path: str | Path, fix: str = "check the path") -> str:
    """`decode_text` of the file at `path`; a file that cannot be read is a `RayragError` naming it and `fix`."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise RayragError(f"{path}: cannot read ({e.strerror}); {fix}") from e
    return decode_text(raw)


def has_undecodable(text: str) -> bool:
    """Whether `text` (from `decode_text`) holds bytes that were not UTF-8."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def split_lines(text: str, keepends: bool = False) -> list[str]:
    """The lines of `text`, split at `\\n` only (a trailing `\\r` is dropped unless `keepends`), so
    list index i is line i + 1 of the file; a final newline ends the last line, it starts none."""
    parts = text.split("\n")
    last = parts.pop()
    if keepends:
        lines = [p + "\n" for p in parts]
    else:
        lines = [p[:-1] if p.endswith("\r") else p for p in parts]
    if last:
        lines.append(last if keepends or not last.endswith("\r") else last[:-1])
    return lines


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, line) for each line of `text` (see `split_lines`)."""
    return enumerate(split_lines(text), start=1)


def json_lines(text: str) -> Iterator[tuple[int, dict | str]]:
    """(line number, JSON object) for each object line of JSON Lines `text`, or (line number, reason)
    for a line that is not one; blank lines are passed over."""
    for lineno, line in numbered_lines(text):
        if not line.strip():
            continue
        if has_undecodable(line):
            yield lineno, "non-UTF-8 bytes"
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield lineno, f"not valid JSON ({e.msg})"
            continue
        yield lineno, row if isinstance(row, dict) else "not a JSON object"


class SkippedRows(list):
    """Rows a reader could not use, one `file:line: reason` string each (a list of str)."""

    def add(self, where: str | Path, line: int | None, reason: str) -> None:
        """Record that line `line` of file `where` (or `where` itself when `line` is None) was skipped."""
        self.append(f"{where}:{line}: {reason}" if line is not None else f"{where}: {reason}")

    def log(self, logger: logging.Logger = log, noun: str = "rows") -> None:
        """Warn about the first `LOGGED_SKIPS` entries one by one, and how many more there are."""
        for entry in self[:LOGGED_SKIPS]:
            logger.warning("skipped %s", entry)
        if len(self) > LOGGED_SKIPS:
            logger.warning("... and %d more skipped %s", len(self) - LOGGED_SKIPS, noun)
