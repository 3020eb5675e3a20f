"""Question-answer splits from `--data_dir`.

Two layouts, per split (`train`, `val`, `test`):
- `SPLIT.source` / `SPLIT.target`, one example per line, aligned by line (the reference's format).
  A target line may hold several gold answers separated by tabs. An optional `SPLIT.titles`
  gives the titles of the gold passages (tab-separated), for retrieval metrics.
- `SPLIT.jsonl`: {"question": str, "answers": [str, ...] or str, "titles": [str, ...] (optional)}.

An example whose line is blank or holds non-UTF-8 bytes is skipped and reported with file:line;
line counts that differ between aligned files are refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from rayrag.errors import RayragError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class QAExample:
    """A question, its gold answers, and the titles of its gold passages (may be empty)."""

    question: str
    answers: tuple[str, ...]
    titles: tuple[str, ...] = ()


def _lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.decode("utf-8", errors="surrogateescape").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    return [line.rstrip("\r") for line in lines]


def _bad(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def _from_aligned(data_dir: Path, split: str, skipped: list[str]) -> list[QAExample]:
    src_path, tgt_path = data_dir / f"{split}.source", data_dir / f"{split}.target"
    if not tgt_path.is_file():
        raise RayragError(f"{tgt_path}: missing; every {split}.source needs a {split}.target with its answers")
    src, tgt = _lines(src_path), _lines(tgt_path)
    titles_path = data_dir / f"{split}.titles"
    titles = _lines(titles_path) if titles_path.is_file() else None
    if len(src) != len(tgt):
        raise RayragError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; the files must be aligned "
            "line by line, one example per line")
    if titles is not None and len(titles) != len(src):
        raise RayragError(
            f"{titles_path} has {len(titles)} lines but {src_path} has {len(src)}; align them or remove "
            f"{titles_path.name}")
    out = []
    for i, (q, a) in enumerate(zip(src, tgt)):
        where = f"{src_path}:{i + 1}"
        if _bad(q) or _bad(a) or (titles is not None and _bad(titles[i])):
            skipped.append(f"{where}: non-UTF-8 bytes")
            continue
        answers = tuple(x.strip() for x in a.split("\t") if x.strip())
        if not q.strip() or not answers:
            skipped.append(f"{where}: blank {'question' if not q.strip() else 'answer'}")
            continue
        gold = tuple(t.strip() for t in titles[i].split("\t") if t.strip()) if titles else ()
        out.append(QAExample(q.strip(), answers, gold))
    return out


def _from_jsonl(path: Path, skipped: list[str]) -> list[QAExample]:
    out = []
    for i, line in enumerate(_lines(path)):
        where = f"{path}:{i + 1}"
        if not line.strip():
            continue
        if _bad(line):
            skipped.append(f"{where}: non-UTF-8 bytes")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            skipped.append(f"{where}: not valid JSON ({e.msg})")
            continue
        if not isinstance(row, dict) or "question" not in row or "answers" not in row:
            skipped.append(f"{where}: needs `question` and `answers`")
            continue
        answers = row["answers"] if isinstance(row["answers"], list) else [row["answers"]]
        answers = tuple(str(a).strip() for a in answers if str(a).strip())
        titles = row.get("titles") or row.get("gold_titles") or []
        question = str(row["question"]).strip()
        if not question or not answers:
            skipped.append(f"{where}: blank {'question' if not question else 'answers'}")
            continue
        out.append(QAExample(question, answers, tuple(str(t) for t in titles)))
    return out


def load_split(data_dir: str | Path, split: str, limit: int = -1) -> list[QAExample]:
    """Examples of `split` from `data_dir`; `limit` >= 0 keeps the first `limit`."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise RayragError(f"--data_dir {data_dir}: no such directory")
    skipped: list[str] = []
    if (data_dir / f"{split}.source").is_file():
        examples = _from_aligned(data_dir, split, skipped)
        origin = data_dir / f"{split}.source"
    elif (data_dir / f"{split}.jsonl").is_file():
        origin = data_dir / f"{split}.jsonl"
        examples = _from_jsonl(origin, skipped)
    else:
        raise RayragError(
            f"--data_dir {data_dir}: no {split}.source/{split}.target or {split}.jsonl; add the {split} split")
    for entry in skipped[:20]:
        log.warning("skipped %s", entry)
    if len(skipped) > 20:
        log.warning("... and %d more skipped examples", len(skipped) - 20)
    if not examples:
        raise RayragError(f"{origin}: no usable examples ({len(skipped)} skipped); one question per line")
    return examples[:limit] if limit >= 0 else examples


def has_split(data_dir: str | Path, split: str) -> bool:
    d = Path(data_dir)
    return (d / f"{split}.source").is_file() or (d / f"{split}.jsonl").is_file()
