"""Files written atomically: a crash or a kill never leaves a half-written file under its final name.

Every file or directory rayrag writes for later use goes through here:

- `atomic_write_text` / `atomic_write_bytes` / `atomic_write_with` write `PATH` via a temporary
  sibling `.NAME.tmp-PID`: write, flush, fsync, rename into place, fsync the directory.
- `atomic_dir` yields a temporary sibling directory `.NAME.tmp-PID` to fill; on success its files
  are fsynced and it replaces `PATH` (the previous `PATH` is moved to `.NAME.old-PID` meanwhile and
  removed after); on failure it is removed.
- `remove_stale_temporaries` removes the `.NAME.tmp-PID` / `.NAME.old-PID` siblings that processes
  which no longer exist left behind; every write above calls it first.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rayrag.errors import RayragError

log = logging.getLogger(__name__)



# ---------------------------------------------------------------- temporaries of dead processes

def temporary_sibling(path: Path, kind: str = "tmp", pid: int | None = None) -> Path:
    """`.NAME.KIND-PID` next to `path`: where a write of `path` by process `pid` (default: this one) stages."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid() if pid is None else pid}")


def _pid_alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


def _remove(path: Path) -> None:
    """Remove a file, link or directory tree; nothing if it is gone already."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the `.NAME.tmp-PID` and `.NAME.old-PID` siblings of `path` (files or directories) whose
    process no longer exists; returns what was removed. Temporaries of live processes, this one
    included, are kept: they may be writing.

    If `path` itself is missing and a dead process left a `.NAME.old-PID` (it was killed between
    moving the previous, whole `path` aside and renaming the new one in), that previous version is put
    back instead of removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(f".{path.name}.") + r"(tmp|old)-(\d+)")
    stale: list[tuple[str, int, Path]] = []
    for p in path.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and not _pid_alive(int(m.group(2))):
            stale.append((m.group(1), int(m.group(2)), p))
    olds = sorted((p for kind, _, p in stale if kind == "old"), key=lambda p: p.lstat().st_mtime)
    if olds and not (path.exists() or path.is_symlink()):
        restored = olds.pop()  # the newest, in the unlikely case there are several
        os.replace(restored, path)
        _fsync_dir(path.parent)
        log.warning("%s: restored from %s, left by a process killed while replacing it", path, restored.name)
    removed = []
    for kind, _, p in stale:
        if p.exists() or p.is_symlink():
            _remove(p)
            removed.append(p)
            log.info("removed %s, left by a process that no longer exists", p)
    return removed


# ---------------------------------------------------------------- fsync

def _fsync_dir(path: Path) -> None:
    """fsync a directory, so the names created or renamed in it survive a power loss."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # platforms that cannot open a directory (Windows) have nothing to sync
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise  # some filesystems do not sync directories; a real I/O error still counts
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root`, `root` last."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                _fsync_file(p)
        _fsync_dir(Path(dirpath))


# ---------------------------------------------------------------- atomic writes

def atomic_write_with(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Atomically make `path` with `write(tmp_path)` (e.g. `lambda p: torch.save(obj, p)`).

    `write` fills the temporary sibling `.NAME.tmp-PID`; it is fsynced and renamed to `path`, and the
    directory is fsynced. If `write` raises, the temporary is removed and `path` keeps what it held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically replace `path` by `data` (see `atomic_write_with`)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()

    return atomic_write_with(path, write)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Atomically replace `path` by `text`, written as is (no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding))


@contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling directory `.NAME.tmp-PID`; fill it. When the block ends
    normally, every file in it is fsynced and it becomes `path` (a previous `path` is swapped out to
    `.NAME.old-PID`, then removed); when the block raises, it is removed and `path` is untouched.

    An existing `path` is refused unless `overwrite`, with a `RayragError` naming it and the fix."""
    out = Path(path)
    remove_stale_temporaries(out)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise RayragError(f"{out}: already exists; pass --overwrite to replace it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(out)
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        _swap_in(tmp, out)
    finally:
        _remove(tmp)


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` is moved aside to `.NAME.old-PID` first and removed once
    `tmp` is in place. The old version is renamed back to the free `tmp` name before it is deleted, so
    a `.NAME.old-PID` is always whole and only exists between two renames (see
    `remove_stale_temporaries`, which puts it back if the process died there)."""
    old = None
    if out.exists() or out.is_symlink():
        old = temporary_sibling(out, "old")
        _remove(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        os.replace(old, tmp)
    _fsync_dir(out.parent)
    _remove(tmp)
