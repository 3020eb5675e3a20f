"""Memory of the processes that hold the knowledge base while trials run (`rayrag tune --memory_report`).

A Ray Tune callback in the search's driver. Each time a trial reports (at most every `every_s`), it looks at
this Ray instance's processes — the driver's descendants, so only with a local instance the search started —
and sums the proportional set size (PSS, `rayrag.bench.memory`) of:
- the retrieval actors (processes titled `ray::RetrievalActor`): their count and whole PSS;
- the knowledge base's files mapped by the actors and by the running trials: the FAISS index file (and how
  many processes hold pages of it) and the Arrow passages. PSS counts a page shared by several processes
  once, so one shared copy sums to at most the file's size, whatever the number of processes; a private copy
  (a process that read the index into its own memory) is not a mapping and shows in the actors' PSS only.
`memory.json` keeps the sample with the most trials running at once (then the largest actor memory) and
every sample's summary.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import psutil
from ray.tune import Callback

from rayrag.bench.memory import kb_file_pss, pss
from rayrag.atomic import atomic_write_text
from rayrag.kb.manifest import INDEX_FILE

log = logging.getLogger(__name__)

ACTOR_TITLE = "ray::RetrievalActor"
MIB = 2**20


def _descendants() -> list[psutil.Process]:
    try:
        return psutil.Process(os.getpid()).children(recursive=True)
    except psutil.Error:
        return []


def _title(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


class MemoryProbe(Callback):
    """Samples the memory of the knowledge base's holders while trials run; writes `path` (memory.json)."""

    def __init__(self, path: Path, kb_dir: Path | None, every_s: float = 1.0):
        self.path = Path(path)
        self.kb_dir = Path(kb_dir) if kb_dir is not None and (Path(kb_dir) / INDEX_FILE).is_file() else None
        self.every_s = every_s
        self.last = 0.0
        self.samples: list[dict] = []
        self.peak: dict | None = None

    def sample(self, running_pids: list[int]) -> dict:
        """One sample: the retrieval actors among this process's descendants and the trials `running_pids`."""
        actors = [p.pid for p in _descendants() if _title(p).startswith(ACTOR_TITLE)]
        holders = [pid for pid in set(actors) | set(running_pids) if psutil.pid_exists(pid)]
        per_process = {pid: kb_file_pss([pid], self.kb_dir) for pid in holders} if self.kb_dir is not None else {}
        files = {key: sum(f[key] for f in per_process.values()) for key in ("index_file", "passages_files")}
        index_holders = sorted(pid for pid, f in per_process.items() if f["index_file"] > 0)
        actor_pss = 0
        for pid in actors:
            try:
                actor_pss += pss(pid)
            except psutil.Error:
                pass
        return {"time": time.time(), "running_trials": len(running_pids), "retrieval_actors": len(actors),
                "actor_pids": sorted(actors), "trial_pids": sorted(running_pids),
                "index_holders": len(index_holders), "index_holder_pids": index_holders,
                "actors_pss_mib": actor_pss / MIB,
                "index_file_pss_mib": files.get("index_file", 0) / MIB,
                "passages_files_pss_mib": files.get("passages_files", 0) / MIB}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        running = [t.last_result.get("pid") for t in trials if t.status == "RUNNING" and t.last_result]
        try:
            s = self.sample([int(pid) for pid in running if pid])
        except psutil.Error as e:  # a process ended while it was read
            log.debug("memory sample skipped: %s", e)
            return
        self.samples.append(s)
        if self.peak is None or (s["running_trials"], s["actors_pss_mib"]) > (self.peak["running_trials"],
                                                                              self.peak["actors_pss_mib"]):
            self.peak = s
        self.write()

    def write(self) -> None:
        index_mib = (self.kb_dir / INDEX_FILE).stat().st_size / MIB if self.kb_dir is not None else None
        report = {"index_file_mib": index_mib, "peak": self.peak, "samples": self.samples}
        atomic_write_text(self.path, json.dumps(report, indent=2) + "\n")
