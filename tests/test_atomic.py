"""`rayrag.atomic`: atomic writes, directory swaps and stale temporaries of dead processes."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from rayrag.errors import RayragError

from rayrag.atomic import atomic_dir, atomic_write_bytes, atomic_write_text, atomic_write_with, remove_stale_temporaries


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
