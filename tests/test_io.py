"""`rayrag.io`: atomic writes, stale temporaries of dead processes, text decoding, skipped-row reports."""

from __future__ import annotations

import ast
import logging
import os
from pathlib import Path

import psutil
import pytest

from rayrag.errors import RayragError
from rayrag.io import (SkippedRows, atomic_dir, atomic_write_bytes, atomic_write_text, atomic_write_with,
                       decode_text, has_undecodable, json_lines, numbered_lines, read_text,
                       remove_stale_temporaries, split_lines)

SRC = Path(__file__).resolve().parents[1] / "src" / "rayrag"


def _dead_pid() -> int:
    # Linux never hands out a pid above 2**22 (PID_MAX_LIMIT); check anyway.
    pid = next(p for p in range(2**22 + 1, 2**22 + 1000) if not psutil.pid_exists(p))
    return pid


def test_atomic_file_write_keeps_the_old_content_when_the_writer_raises(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write_text(path, "old\r\n")
    assert path.read_bytes() == b"old\r\n"  # written as is, no newline translation

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_with(path, half_then_fail)
    assert path.read_bytes() == b"old\r\n"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]  # no temporary left
    atomic_write_bytes(path, b"\x00new")
    assert path.read_bytes() == b"\x00new"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_stale_temporaries_of_dead_processes_are_removed_files_and_directories(tmp_path):
    dead, me = _dead_pid(), os.getpid()
    target = tmp_path / "kb"
    target.mkdir()
    names = {f".kb.tmp-{dead}": "dir", f".kb.old-{dead}": "file", f".kb.tmp-{dead + 1}": "file",
             f".kb.tmp-{me}": "dir", ".kb.old-1": "file",  # live: this test, and init
             f".kb.tmp-x{dead}": "file", f".kbx.tmp-{dead}": "file", f"kb.tmp-{dead}": "file"}  # not ours
    for name, kind in names.items():
        if kind == "dir":
            (tmp_path / name).mkdir()
            (tmp_path / name / "part").write_text("x")
        else:
            (tmp_path / name).write_text("x")
    removed = remove_stale_temporaries(target)
    assert sorted(p.name for p in removed) == sorted([f".kb.tmp-{dead}", f".kb.old-{dead}", f".kb.tmp-{dead + 1}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["kb", f".kb.tmp-{me}", ".kb.old-1", f".kb.tmp-x{dead}", f".kbx.tmp-{dead}", f"kb.tmp-{dead}"])


def test_a_write_removes_stale_temporaries_first(tmp_path):
    dead = _dead_pid()
    (tmp_path / f".last.ckpt.tmp-{dead}").write_bytes(b"partial")
    atomic_write_bytes(tmp_path / "last.ckpt", b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_previous_version_is_put_back_if_the_swap_was_killed_midway(tmp_path):
    old = tmp_path / f".kb.old-{_dead_pid()}"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    remove_stale_temporaries(tmp_path / "kb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kb"]
    assert (tmp_path / "kb" / "manifest.json").read_text() == "{}"


def test_directory_swap(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        assert tmp.name == f".model.tmp-{os.getpid()}" and tmp.is_dir() and not out.exists()
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RayragError, match=r"model: already exists; pass --overwrite to replace it"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("second")
            raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # untouched by the failed write
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("second")
    assert [p.relative_to(out).as_posix() for p in sorted(out.rglob("*"))] == ["sub", "sub/b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary, no old copy


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


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    return [(n.module or "", id(n) in top) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + \
        [(a.name, id(n) in top) for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]


def _module_graph() -> dict[str, set[str]]:
    """rayrag module -> the rayrag modules it imports (lazy imports inside functions included)."""
    names = {}
    for path in SRC.rglob("*.py"):
        parts = ["rayrag", *path.relative_to(SRC).with_suffix("").parts]
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                found |= {m for m in (n.module, *(f"{n.module}.{a.name}" for a in n.names)) if m in names}
            elif isinstance(n, ast.Import):
                found |= {a.name for a in n.names if a.name in names}
        graph[name] = {m for m in found if m != name and not name.startswith(m + ".")}
    return graph


def test_no_import_cycle_and_tiny_models_out_of_the_import_path():
    """No module imports a module that imports it back, directly or through others (DFS over the import
    graph), and no two packages import each other; tiny test models are only imported lazily."""
    graph = _module_graph()
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join(stack[stack.index(n):] + [n])
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    package = {m: ".".join(m.split(".")[:2]) for m in graph}
    edges = {(package[a], package[b]) for a in graph for b in graph[a] if package[a] != package[b]}
    assert not [(a, b) for a, b in edges if (b, a) in edges], "packages that import each other"
    for path in SRC.rglob("*.py"):
        assert ("rayrag.tiny", True) not in _imports(path), f"{path} imports rayrag.tiny at module level"