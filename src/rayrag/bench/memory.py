"""Memory of the processes that hold an index, as proportional set size (PSS).

PSS divides each shared page among the processes that map it, so the PSS of a group of processes
counts a page they share once: an index memory-mapped by four processes adds one copy to their
summed PSS, an index read into each process's private memory adds four.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import psutil

from rayrag.kb.manifest import INDEX_FILE, PASSAGES_DIR


def pss(pid: int | None = None) -> int:
    """Proportional set size of process `pid` (default: this one), in bytes."""
    return int(psutil.Process(pid or os.getpid()).memory_full_info().pss)


def total_pss(pids: Iterable[int]) -> int:
    """Summed PSS of `pids`, in bytes (each shared page counted once across them)."""
    return sum(pss(p) for p in pids)


def kb_file_pss(pids: Iterable[int], kb_dir: Path) -> dict[str, int]:
    """Summed PSS of the memory-mapped files of knowledge base `kb_dir` in `pids`, in bytes:
    `index_file` (index.faiss mapped by FAISS) and `passages_files` (the Arrow files)."""
    index = str((kb_dir / INDEX_FILE).resolve())
    passages = str((kb_dir / PASSAGES_DIR).resolve()) + os.sep
    out = {"index_file": 0, "passages_files": 0}
    for pid in pids:
        for m in psutil.Process(pid).memory_maps(grouped=True):
            if m.path == index:
                out["index_file"] += int(m.pss)
            elif m.path.startswith(passages):
                out["passages_files"] += int(m.pss)
    return out
