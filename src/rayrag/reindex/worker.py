"""The background process of one re-index: `python -m rayrag.reindex.worker JOB.json`.

Runs at low priority (nice 10), so that training keeps its cores, and ends with the process that started it; writes the stage seconds to JOB.json's sibling
`.done.json` after the knowledge base is in place, and exits 0. Any failure exits non-zero with the error on stderr
(the worker's log file); the training run then retries it or skips the refresh (`rayrag.reindex.callback`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path


def done_file(job_file: Path) -> Path:
    """Where the worker of `job_file` reports success (the stage seconds, JSON)."""
    return job_file.with_name(job_file.name.removesuffix(".json") + ".done.json")


def _die_with_parent() -> None:
    """Ask Linux to end this process when the training process that started it ends (a crashed run must not leave
    a worker writing a generation that its resumed run starts again); elsewhere, nothing."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent ended before prctl took effect
        sys.exit(3)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m rayrag.reindex.worker JOB.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _die_with_parent()
    try:
        os.nice(10)
    except OSError:
        pass
    logging.getLogger(__name__).info("re-index worker pid %d: %s", os.getpid(), argv[0])
    from rayrag.atomic import atomic_write_text
    from rayrag.reindex.job import ReindexJob, run

    job_file = Path(argv[0])
    job = ReindexJob.from_json(job_file.read_text(encoding="utf-8"))
    seconds = run(job)
    atomic_write_text(done_file(job_file), json.dumps(seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
