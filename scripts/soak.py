"""Soak test of the Ray retrieval pool: train twice with the same seed, once undisturbed and once while a
killer thread SIGKILLs a random retrieval actor every 20-30 s; both runs must end with the same number of
steps, the same validation EM at every validation, and the same retrieved ids at every retrieval call.

    python scripts/soak.py --out runs/soak                 # 250 steps per run: 2 x about 9 minutes on 2 cores
    python scripts/soak.py --out runs/soak --steps 150     # shorter (validation EM is still low at 150 steps)

It builds the demo's task (`rayrag.tasks.synthetic.make_corpus`: questions about invented entities, a
MiniLM knowledge base, a RAG-token model with a MiniLM-warm-started generator, trained with the demo's
settings, so validation EM rises well above 0 within the run) unless --model tiny is
given (a random tiny encoder and BART: fast, but its EM stays near 0). Training runs through the real
command line (`python -m rayrag train --distributed_retriever ray --profile`) on a local Ray instance that
the run starts itself, so the actors are descendants of the run's process and the killer finds them (and
their restarted successors) there. `--retrieval_max_restarts -1` lets Ray restart a killed actor every
time. Prints both runs' numbers; exits 1 if they differ, 2 if a run fails. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil


def rayrag(*args, log: Path | None = None, timeout: float = 3600) -> None:
    """Run a `rayrag` verb to completion (setup steps)."""
    with open(log or os.devnull, "w") as f:
        code = subprocess.run([sys.executable, "-m", "rayrag", *map(str, args)], stdout=f, stderr=subprocess.STDOUT,
                              timeout=timeout).returncode
    if code != 0:
        raise SystemExit(f"rayrag {args[0]} exited {code}" + (f"; see {log}" if log else ""))


def prepare(out: Path, entities: int, model: str, seed: int) -> tuple[Path, Path]:
    """The demo's corpus, a knowledge base and an initial RAG model under `out`; returns (data_dir, model_dir)."""
    from rayrag.tasks.synthetic import make_corpus, write_corpus

    data, kb, init = out / "data", out / "kb", out / f"model-init-{model}"
    if not (data / "train.source").is_file():
        write_corpus(make_corpus(entities, seed=seed), out / "documents.jsonl", data)
    encoder = "tiny" if model == "tiny" else "minilm"
    if not (kb / "manifest.json").is_file():
        print(f"indexing with the {encoder} encoder ...", flush=True)
        rayrag("index", "--docs", out / "documents.jsonl", "--out", kb, "--encoder", encoder, "--quiet",
               log=out / "index.log")
    if not (init / "rayrag.json").is_file():
        generator = ["--generator", "tiny-bart"] if model == "tiny" else [
            "--generator", "minilm"]
        rayrag("init-model", "--kb", kb, "--out", init, *generator, "--n_docs", "2", "--max_combined_length", "64",
               "--seed", str(seed), "--overwrite", "--quiet", log=out / "init-model.log")
    return data, init


def actor_pids(root: int) -> list[int]:
    """Retrieval actors among the descendants of process `root` (the run's own Ray instance)."""
    pids = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for p in psutil.Process(root).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if " ".join(p.cmdline()).startswith("ray::RetrievalActor"):
                    pids.append(p.pid)
    return sorted(pids)


class Killer(threading.Thread):
    """Once the pool is ready (its log line), SIGKILLs a random retrieval actor of the run every
    `low`-`high` seconds until stopped."""

    def __init__(self, root: int, log: Path, low: float, high: float, seed: int):
        super().__init__(daemon=True)
        self.root, self.log, self.low, self.high = root, log, low, high
        self.random = random.Random(seed)
        self.stopped = threading.Event()
        self.kills: list[tuple[float, int]] = []

    def run(self) -> None:
        while "; actor pids " not in self.log.read_text(errors="replace"):
            if self.stopped.wait(0.5):
                return
        t0 = time.monotonic()
        while not self.stopped.wait(self.random.uniform(self.low, self.high)):
            pids = actor_pids(self.root)
            if not pids:  # not started yet, or all restarting
                continue
            pid = self.random.choice(pids)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                self.kills.append((time.monotonic() - t0, pid))
                print(f"  killer: SIGKILL retrieval actor pid {pid}, {time.monotonic() - t0:.0f} s after the pool "
                      f"was ready ({len(self.kills)} so far)", flush=True)


def train(out: Path, data: Path, model: Path, opts, kill: bool) -> dict:
    """One training run; returns its numbers (steps, val EM per validation, ids digests, losses, kills)."""
    args = ["train", "--data_dir", data, "--output_dir", out, "--model_name_or_path", model, "--do_train",
            "--max_steps", opts.steps, "--num_train_epochs", "1000", "--train_batch_size", opts.batch_size,
            "--eval_batch_size", "32", "--n_val", opts.n_val, "--val_check_interval", opts.val_every,
            "--learning_rate", opts.learning_rate, "--lr_scheduler", "constant", "--warmup_steps", "20",
            "--max_grad_norm", "1.0", "--max_target_length", "16", "--val_max_target_length", "16",
            "--question_encoder_lr", opts.question_encoder_lr, "--dropout", "0",
            "--freeze_embeddings", "--seed", opts.seed, "--accelerator", "cpu", "--log_every_n_steps", "1",
            "--no-progress", "--profile", "--distributed_retriever", "ray",
            "--num_retrieval_workers", opts.workers, "--retrieval_max_restarts", "-1"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    log = out.parent / f"{out.name}.log"
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "rayrag", *map(str, args)], stdout=f, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        killer = Killer(proc.pid, log, opts.kill_min, opts.kill_max, opts.seed) if kill else None
        seen: dict[int, psutil.Process] = {}  # psutil checks that a pid was not reused before it signals
        try:
            if killer:
                killer.start()
            while proc.poll() is None:
                if time.monotonic() - t0 > opts.timeout_minutes * 60:
                    raise SystemExit(f"{out.name}: still running after {opts.timeout_minutes} minutes; see {log}")
                with contextlib.suppress(psutil.NoSuchProcess):
                    seen.update((p.pid, p) for p in psutil.Process(proc.pid).children(recursive=True))
                time.sleep(1)
        finally:
            if killer:
                killer.stopped.set()
                killer.join(timeout=10)
            if proc.poll() is None:
                proc.kill()
            for p in seen.values():  # stop whatever is left of the run
                with contextlib.suppress(psutil.Error):
                    p.kill()
            proc.wait(timeout=60)
    if proc.returncode != 0:
        print(f"{out.name}: rayrag train exited {proc.returncode}; the log ends:\n"
              + "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:]), file=sys.stderr)
        raise SystemExit(2)
    with open(out / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    profile = json.loads((out / "retrieval_profile.json").read_text())["ranks"]["0"]
    return {"seconds": time.monotonic() - t0,
            "steps": json.loads((out / "metrics.json").read_text())["train_steps"],
            "loss_rows": [float(r["train_loss_step"]) for r in rows if r.get("train_loss_step")],
            "val_em": [float(r["val_em"]) for r in rows if r.get("val_em")],
            "ids_sha1": profile["ids_sha1"], "retries": profile["retries"],
            "kills": len(killer.kills) if killer else 0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/soak"), help="working directory")
    p.add_argument("--model", choices=("minilm", "tiny"), default="minilm", help="the demo's model or a tiny one")
    p.add_argument("--entities", type=int, default=200, help="invented entities of the corpus (5 facts each)")
    p.add_argument("--steps", type=int, default=250, help="training steps of each run")
    p.add_argument("--val_every", type=int, default=50, help="validate every N steps")
    p.add_argument("--n_val", type=int, default=64, help="validation questions")
    p.add_argument("--batch_size", type=int, default=16, help="questions per step")
    p.add_argument("--learning_rate", type=float, default=2e-4)
    p.add_argument("--question_encoder_lr", type=float, default=1e-5)
    p.add_argument("--workers", type=int, default=2,
                   help="retrieval actors (the one process uses actor 0 first: with 2, half the kills hit it)")
    p.add_argument("--kill_min", type=float, default=20.0, help="shortest pause between kills (s)")
    p.add_argument("--kill_max", type=float, default=30.0, help="longest pause between kills (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout_minutes", type=float, default=60.0, help="give up on a run after this long")
    opts = p.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    data, model = prepare(opts.out, opts.entities, opts.model, opts.seed)
    results = {}
    for name, kill in (("clean", False), ("killed", True)):
        out = opts.out / f"run-{name}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        print(f"training the {name} run ({opts.steps} steps) ...", flush=True)
        results[name] = train(out, data, model, opts, kill)
    clean, killed = results["clean"], results["killed"]
    checks = {
        "steps": clean["steps"] == killed["steps"] == opts.steps,
        "logged training steps": len(clean["loss_rows"]) == len(killed["loss_rows"]) == opts.steps,
        "validation EM": clean["val_em"] == killed["val_em"] and bool(clean["val_em"]),
        "retrieved ids at every call": clean["ids_sha1"] == killed["ids_sha1"],
        "losses": clean["loss_rows"] == killed["loss_rows"],
    }
    print(f"\n{'':<28}{'clean':>14}{'killed':>14}")
    for label, key in (("seconds", "seconds"), ("training steps", "steps"), ("actors killed", "kills"),
                       ("calls re-sent", "retries")):
        a, b = clean[key], killed[key]
        print(f"{label:<28}{a:>14.0f}{b:>14.0f}" if isinstance(a, float) else f"{label:<28}{a:>14}{b:>14}")
    print(f"{'retrieval calls':<28}{len(clean['ids_sha1']):>14}{len(killed['ids_sha1']):>14}")
    print(f"{'validation EM':<28}{' '.join(f'{v:.3f}' for v in clean['val_em']):>14}  |  "
          f"{' '.join(f'{v:.3f}' for v in killed['val_em'])}")
    print()
    for label, ok in checks.items():
        print(f"{'same' if ok else 'DIFFERENT':>9}  {label}")
    report = {"options": {k: str(v) for k, v in vars(opts).items()}, "checks": checks,
              **{name: {k: v for k, v in r.items() if k not in ("ids_sha1", "loss_rows")}
                 for name, r in results.items()}}
    (opts.out / "soak_report.json").write_text(json.dumps(report, indent=2) + "\n")
    if killed["kills"] == 0:
        print("no actor was killed: the run was shorter than the first pause; use more --steps", file=sys.stderr)
        return 1
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
