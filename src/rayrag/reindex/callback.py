"""`Reindexer`: the Lightning callback that keeps the index in step with a context encoder that trains.

Generations. Generation 0 is the knowledge base training started from. Every `every` optimizer steps (step s = N,
2N, ...) the first process snapshots the context encoder's weights and starts a re-index of the whole knowledge base
with them in the background (`rayrag.reindex.worker`: a process at low priority, or Ray workers), written to
OUTPUT_DIR/index/gen-K. Training goes on with the index it has. At step s + N every rank switches to generation K,
before that step's retrieval (`RetrievalClient.switch`; Ray actors open it on the first call that names it), and
the next re-index starts. So the generation in use at a step is a function of the step (and of refreshes that
failed): every rank uses the same one, a resumed run uses the same ones as the run it resumes, and no call sees a
half-written index (a generation is renamed into place only when complete). If a re-index is not done when its step
comes, the ranks wait for it, and the wait is logged with the advice to raise --reindex_every.

Faults. A worker that exits with an error (killed, out of memory, disk full) is started again from the same
snapshot, up to `retries` times; after that the refresh is skipped with a warning and training goes on with the
current generation. One re-index runs at a time: the next starts only when the previous was switched to or skipped.

State. The callback's state (generation in use, the pending re-index, the history) is saved in every checkpoint
with the context encoder's weights (part of the model). A resumed run switches to the checkpoint's generation and
restarts a pending re-index from its snapshot unless its generation was finished meanwhile. Generations no longer in
use and not named by the latest checkpoint are deleted.

Logs. Each rank appends `step,generation,unix_time` for every step (the time its batch started) to
OUTPUT_DIR/index/steps-rank{R}.csv; the generation is logged as `index_generation` with the training metrics;
OUTPUT_DIR/index/history.json lists every re-index (steps, clock times it started, finished and was switched to,
seconds per stage, seconds training waited, outcome), and `--profile` adds it to retrieval_profile.json. Together
they give the steps per minute while a re-index runs and while none does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lightning as L

from rayrag.atomic import atomic_write_text
from rayrag.reindex.job import ReindexJob
from rayrag.reindex.worker import done_file

log = logging.getLogger(__name__)

INDEX_DIR = "index"
WAIT_TICK_S = 10.0
"""While the ranks wait for a re-index at its step, the first process tells them "wait" this often."""


def generation_dir(out: Path, number: int) -> Path:
    return Path(out) / INDEX_DIR / f"gen-{number:04d}"


class Reindexer(L.Callback):
    """Re-indexes every `every` steps and switches every rank to each new generation at one step boundary.

    `template`: a `ReindexJob` with what every re-index shares (source knowledge base, pooling, index type, engine);
    `kb_encoder`: the encoder the knowledge base was embedded with (None: unknown); a context encoder with other
    weights re-embeds the knowledge base before the first step."""

    def __init__(self, out: Path, every: int, template: ReindexJob, *, kb_encoder: str | None = None,
                 retries: int = 2):
        self.out = Path(out)
        self.every = every
        self.template = template
        self.retries = retries
        self.kb_encoder = kb_encoder
        # state, saved in checkpoints (the same on every rank)
        self.current: list = [0, template.source]
        self.previous: list | None = None
        self.pending: dict | None = None
        self.started = 0
        self.boundary = -1
        self.checked = False
        """Whether the context encoder's starting weights were compared with the knowledge base's (once per run)."""
        self.checkpointed: set[int] = set()
        self.history: list[dict] = []
        # the first process only
        self.proc: subprocess.Popen | None = None
        self.attempts = 0
        self._steps_file = None

    @property
    def index_dir(self) -> Path:
        return self.out / INDEX_DIR

    # ----- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"current": self.current, "previous": self.previous, "pending": self.pending, "started": self.started,
                "boundary": self.boundary, "checked": self.checked, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.current, self.previous = list(state["current"]), state["previous"]
        self.pending, self.started = state["pending"], int(state["started"])
        self.boundary, self.checked = int(state["boundary"]), bool(state["checked"])
        self.history = list(state["history"])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # the generations a resume from this checkpoint needs: the one in use, and the pending one (or its snapshot)
        self.checkpointed = {int(self.current[0])} | ({int(self.pending["number"])} if self.pending else set())

    # ----- the loop ------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self._steps_file = open(self.index_dir / f"steps-rank{trainer.global_rank}.csv", "a", encoding="utf-8")
        if self.current[0]:  # resumed: the checkpoint's generation
            pl_module.client.switch(int(self.current[0]), str(self.current[1]))
            log.info("index generation %d (%s), as the checkpoint recorded", self.current[0], self.current[1])
        if self.pending is not None and trainer.is_global_zero:
            if self._finished(self.pending):
                log.info("re-index to generation %d finished before the restart", self.pending["number"])
            else:
                self._launch()
        if not self.checked:  # a new run (a resumed one compared before its checkpoint)
            self.checked = True
            differs = trainer.strategy.broadcast(
                not self._same_weights(pl_module.context_encoder) if trainer.is_global_zero else None, src=0)
            if differs:
                log.info("the context encoder's weights differ from those %s was embedded with: re-embedding it "
                         "before the first step", self.template.source)
                self._start(trainer, pl_module, step=0)
                self._switch(trainer, pl_module, step=0)

    def _same_weights(self, encoder) -> bool:
        """Whether `encoder` (the `ContextEncoder` the run trains) has the weights of the knowledge base's encoder."""
        import torch

        from rayrag.encoders import load_context_encoder

        if self.kb_encoder is None:
            return False
        theirs = load_context_encoder(self.kb_encoder)[0].state_dict()
        mine = encoder.encoder.state_dict()
        return mine.keys() == theirs.keys() and all(torch.equal(mine[k].cpu(), theirs[k]) for k in mine)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx % trainer.accumulate_grad_batches:
            return  # within an optimizer step: never switch between its micro-batches
        step = trainer.global_step
        if trainer.is_global_zero:
            self._poll()
        if step > 0 and step % self.every == 0 and step != self.boundary:
            self.boundary = step
            if self.pending is not None:
                self._switch(trainer, pl_module, step)
            self._start(trainer, pl_module, step)
        pl_module.log("index_generation", float(self.current[0]), on_step=True, on_epoch=False, batch_size=1,
                      rank_zero_only=True)
        self._steps_file.write(f"{step},{self.current[0]},{time.time():.3f}\n")
        self._steps_file.flush()

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop("training ended")

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._stop("training failed")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._steps_file is not None:
            self._steps_file.close()
            self._steps_file = None

    # ----- steps of a refresh --------------------------------------------------------------------
    def _start(self, trainer, pl_module, step: int) -> None:
        """Every rank: record the re-index that starts at `step`; the first process snapshots the weights and
        launches it."""
        self.started += 1
        number = self.started
        encoder = self.index_dir / f"gen-{number:04d}.encoder"
        job = dataclasses.replace(self.template, number=number, step=step, encoder=str(encoder),
                                  out=str(generation_dir(self.out, number)))
        self.pending = dataclasses.asdict(job)
        if trainer.is_global_zero:
            t0 = time.perf_counter()
            pl_module.context_encoder.copy_for_snapshot().save(encoder)
            self.attempts = 0
            self._launch()
            self.history.append({"number": number, "started_step": step, "started_time": time.time(),
                                 "snapshot_s": time.perf_counter() - t0})

    def _job_file(self, job: dict) -> Path:
        return self.index_dir / f"gen-{int(job['number']):04d}.job.json"

    def _finished(self, job: dict) -> bool:
        return done_file(self._job_file(job)).is_file() and Path(job["out"]).is_dir()

    def _launch(self) -> None:
        job = self.pending
        job_file = self._job_file(job)
        atomic_write_text(job_file, json.dumps(job, indent=1))
        done_file(job_file).unlink(missing_ok=True)
        log_file = open(job_file.with_suffix("").with_suffix(".log"), "a", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", "rayrag.reindex.worker", str(job_file)],
                                     stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log_file.close()
        self.attempts += 1
        log.info("re-index to generation %d started (weights of step %d, worker pid %d, attempt %d)", job["number"],
                 job["step"], self.proc.pid, self.attempts)

    def _poll(self) -> str | None:
        """The first process: "done", "failed" (retries spent) or None (running, or restarted after a failure)."""
        if self.pending is None:
            return None
        if self.proc is None:
            return "done" if self._finished(self.pending) else "failed"
        code = self.proc.poll()
        if code is None:
            return None
        if code == 0 and self._finished(self.pending):
            return "done"
        log_file = self._job_file(self.pending).with_suffix("").with_suffix(".log")
        if self.attempts <= self.retries:
            log.warning("re-index worker of generation %d exited with %s (log: %s); starting it again (%d of %d "
                        "retries)", self.pending["number"], code, log_file, self.attempts, self.retries)
            self._launch()
            return None
        log.warning("re-index to generation %d failed %d times (exit %s; log: %s): skipped, training goes on with "
                    "generation %d", self.pending["number"], self.attempts, code, log_file, self.current[0])
        self.proc = None
        return "failed"

    def _switch(self, trainer, pl_module, step: int) -> None:
        """Every rank, at `step`: wait for the pending re-index (the first process), then all switch to its
        generation, or all stay where they are if it failed."""
        t0 = time.perf_counter()
        while True:  # every 10 s a broadcast of "wait": a long wait never reaches the process group's timeout
            outcome = None
            if trainer.is_global_zero:
                tick = time.perf_counter() + WAIT_TICK_S
                outcome = self._poll()
                while outcome is None and time.perf_counter() < tick:
                    time.sleep(0.05)
                    outcome = self._poll()
            outcome = trainer.strategy.broadcast(outcome or "wait", src=0)
            if outcome != "wait":
                break
        waited = time.perf_counter() - t0
        job, self.pending = self.pending, None
        record = next((h for h in reversed(self.history) if h["number"] == job["number"]), None)
        if outcome == "done":
            self.previous, self.current = self.current, [int(job["number"]), str(job["out"])]
            pl_module.client.switch(int(job["number"]), str(job["out"]))
        if trainer.is_global_zero:
            self.proc = None
            if record is not None:
                done = done_file(self._job_file(job))
                seconds = json.loads(done.read_text()) if outcome == "done" else {}
                if outcome == "done":  # when the worker wrote its record: the end of the re-index
                    record["finished_time"] = done.stat().st_mtime
                record.update(switched_step=step if outcome == "done" else None, outcome=outcome, waited_s=waited,
                              switched_time=time.time() if outcome == "done" else None,
                              attempts=self.attempts, **{f"{k}_s": v for k, v in seconds.items()})
            if waited > 1.0:
                log.warning("step %d waited %.1f s for index generation %d (a re-index took longer than %d steps); "
                            "raise --reindex_every to keep it off the training step", step, waited, job["number"],
                            self.every)
            if outcome == "done":
                log.info("step %d: every rank switched to index generation %d", step, job["number"])
                self._remove_old()
            else:
                self._remove_old()  # the snapshot of the refresh that was skipped
            self._write_history()

    def _remove_old(self) -> None:
        """Delete the generations that are neither in use (current, previous) nor needed by a resume from the latest
        checkpoint, and the snapshots of re-indexes no longer pending (a written generation holds a copy of its
        encoder). Job files and logs stay as the record."""
        keep = {int(self.current[0]), int(self.previous[0]) if self.previous else 0, *self.checkpointed}
        pending = {int(self.pending["number"])} if self.pending is not None else set()
        for path in self.index_dir.glob("gen-*"):
            name, _, kind = path.name.partition(".")
            digits = name.removeprefix("gen-")
            if not digits.isdigit() or not path.is_dir():
                continue
            if (kind == "" and int(digits) not in keep | pending) or (kind == "encoder" and int(digits) not in pending):
                shutil.rmtree(path, ignore_errors=True)

    def _stop(self, why: str) -> None:
        """The first process, when training ends: stop a re-index still running (the checkpoint keeps it pending,
        so `--resume` starts it again from its snapshot)."""
        if self.proc is not None and self.proc.poll() is None:
            log.info("re-index to generation %d stopped: %s", self.pending["number"], why)
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if self.history:
            self._write_history()

    def _write_history(self) -> None:
        atomic_write_text(self.index_dir / "history.json", json.dumps(self.history, indent=1) + "\n")
