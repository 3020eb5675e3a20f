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

import logging
from dataclasses import dataclass
from pathlib import Path

from rayrag.errors import RayragError
from rayrag.text import SkippedRows, has_undecodable, json_lines, read_text, split_lines

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class QAExample:
    """A question, its gold answers, and the titles of its gold passages (may be empty)."""

    question: str
    answers: tuple[str, ...]
    titles: tuple[str, ...] = ()


def _lines(path: Path) -> list[str]:
    return split_lines(read_text(path, fix="check --data_dir"))


def _from_aligned(data_dir: Path, split: str, skipped: SkippedRows) -> list[QAExample]:
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
        if has_undecodable(q) or has_undecodable(a) or (titles is not None and has_undecodable(titles[i])):
            skipped.add(src_path, i + 1, "non-UTF-8 bytes")
            continue
        answers = tuple(x.strip() for x in a.split("\t") if x.strip())
        if not q.strip() or not answers:
            skipped.add(src_path, i + 1, f"blank {'question' if not q.strip() else 'answer'}")
            continue
        gold = tuple(t.strip() for t in titles[i].split("\t") if t.strip()) if titles else ()
        out.append(QAExample(q.strip(), answers, gold))
    return out


def _from_jsonl(path: Path, skipped: SkippedRows) -> list[QAExample]:
    out = []
    for lineno, row in json_lines(read_text(path, fix="check --data_dir")):
        if isinstance(row, str):
            skipped.add(path, lineno, row)
            continue
        if "question" not in row or "answers" not in row:
            skipped.add(path, lineno, "needs `question` and `answers`")
            continue
        answers = row["answers"] if isinstance(row["answers"], list) else [row["answers"]]
        answers = tuple(str(a).strip() for a in answers if str(a).strip())
        titles = row.get("titles") or row.get("gold_titles") or []
        question = str(row["question"]).strip()
        if not question or not answers:
            skipped.add(path, lineno, f"blank {'question' if not question else 'answers'}")
            continue
        out.append(QAExample(question, answers, tuple(str(t) for t in titles)))
    return out


def load_split(data_dir: str | Path, split: str, limit: int = -1) -> list[QAExample]:
    """Examples of `split` from `data_dir`; `limit` >= 0 keeps the first `limit`."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise RayragError(f"--data_dir {data_dir}: no such directory")
    skipped = SkippedRows()
    if (data_dir / f"{split}.source").is_file():
        examples = _from_aligned(data_dir, split, skipped)
        origin = data_dir / f"{split}.source"
    elif (data_dir / f"{split}.jsonl").is_file():
        origin = data_dir / f"{split}.jsonl"
        examples = _from_jsonl(origin, skipped)
    else:
        raise RayragError(
            f"--data_dir {data_dir}: no {split}.source/{split}.target or {split}.jsonl; add the {split} split")
    skipped.log(log, "examples")
    if not examples:
        raise RayragError(f"{origin}: no usable examples ({len(skipped)} skipped); one question per line")
    return examples[:limit] if limit >= 0 else examples


def has_split(data_dir: str | Path, split: str) -> bool:
    d = Path(data_dir)
    return (d / f"{split}.source").is_file() or (d / f"{split}.jsonl").is_file()
