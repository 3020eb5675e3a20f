"""`rayrag bench serve`: a bounded load test of `rayrag serve` on loopback.

For each setting (replicas x batching) the real server is started as a command of its own, warmed up, then asked
--requests questions by --clients concurrent clients (each sends its next question when its last is answered) and
stopped; it reports latency percentiles and questions per second. Settings run in a shuffled order in each of
--rounds rounds, so that a slow minute of the machine does not land on one setting alone. The floor is the model
answering in the benchmark's own process with no server: batches of 1 (the least latency) and of --clients (the
most questions per second a batch that size can give on this machine).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rayrag.errors import RayragError

log = logging.getLogger(__name__)


@dataclass
class BenchServeOptions:
    """Options of `rayrag bench serve`."""

    model: Path = Path("runs/demo/rag/best_model")
    """The model to serve (default: the one `rayrag demo` trains)."""
    questions: Path = Path("runs/demo/data/test.source")
    """Questions, one per line, asked in turn (default: the demo's test questions)."""
    requests: int = 320
    """Questions asked of each setting, after the warm-up."""
    clients: int = 8
    """Concurrent clients; each asks its next question when its last is answered."""
    replicas: list[int] = field(default_factory=lambda: [1, 2])
    """Generator replicas of each setting."""
    batching: list[bool] = field(default_factory=lambda: [True, False])
    """With batching (--max_batch_size --batch_size) and without (batches of one question)."""
    batch_size: int = 8
    """--max_batch_size of the batching settings."""
    batch_wait_timeout_s: list[float] = field(default_factory=lambda: [0.1])
    """--batch_wait_timeout_s of the batching settings: one setting each (default: the server's default)."""
    warmup: int = 16
    """Questions asked before the timed ones (not counted)."""
    rounds: int = 2
    """Times each setting runs, in a shuffled order each round; the table gives the median over rounds."""
    seed: int = 0
    """Seed of the order of the settings."""
    out: Path = Path("runs/bench-serve")
    """Where results.json, results.md and results.png go."""

    def validate(self) -> None:
        for flag, value in (("--requests", self.requests), ("--clients", self.clients), ("--rounds", self.rounds),
                            ("--batch_size", self.batch_size)):
            if value < 1:
                raise RayragError(f"{flag} {value}: must be at least 1")
        if self.warmup < 0:
            raise RayragError(f"--warmup {self.warmup}: must be 0 or more")
        if not self.replicas or min(self.replicas) < 1:
            raise RayragError(f"--replicas {self.replicas}: give one or more counts of at least 1, e.g. [1,2]")
        if not self.batching:
            raise RayragError("--batching: give true, false or both, e.g. [true,false]")
        if not self.batch_wait_timeout_s or min(self.batch_wait_timeout_s) < 0:
            raise RayragError(f"--batch_wait_timeout_s {self.batch_wait_timeout_s}: give one or more waits of 0 or "
                              "more, e.g. [0.02,0.05]")
        if not Path(self.model).is_dir():
            raise RayragError(f"--model {self.model}: no such model directory; run `rayrag demo` first, or point "
                              "--model at a trained model and --questions at its questions")
        if not Path(self.questions).is_file():
            raise RayragError(f"--questions {self.questions}: no such file; give a file of questions, one per line")

    def resolved(self) -> BenchServeOptions:
        return dataclasses.replace(self, replicas=sorted(set(self.replicas)),
                                   batching=sorted(set(self.batching), reverse=True),
                                   batch_wait_timeout_s=sorted(set(self.batch_wait_timeout_s)))


def read_questions(path: Path) -> list[str]:
    questions = [q.strip() for q in Path(path).read_text(encoding="utf-8-sig").splitlines() if q.strip()]
    if not questions:
        raise RayragError(f"--questions {path}: no questions in it; write one question per line")
    return questions


PORTS = range(20000, 32768)
"""Where `free_port` looks: above Ray's worker ports (10002-19999 by default) and below Linux's ephemeral range
(32768-60999), from which the processes Ray starts take ports of their own while Serve starts: a port the kernel
handed out as free can be taken by one of them before Serve's proxy binds it (seen here)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, in `PORTS`, for a server started next."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        port = rng.choice(PORTS)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RayragError(f"no free port found on {host} in {PORTS.start}-{PORTS.stop - 1}")


class ServerProcess:
    """`rayrag serve` in a process (and session) of its own on a free loopback port; stopped with SIGTERM."""

    def __init__(self, args: list[str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", "rayrag", "serve", *args, "--port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = 600) -> None:
        import requests

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RayragError(f"rayrag serve exited {self.proc.returncode} while starting; its output: "
                                  f"{self.log_path}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            time.sleep(1)
        raise RayragError(f"rayrag serve did not become healthy in {timeout_s:.0f} s; its output: {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def load(url: str, questions: list[str], n: int, clients: int) -> dict:
    """Ask `n` questions (in turn from `questions`) from `clients` closed-loop clients; latencies and rate."""
    import requests

    counter = iter(range(n))
    lock = threading.Lock()
    latencies: list[float] = []
    batch_sizes: list[int] = []
    failures: list[str] = []

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                r = session.post(url + "/ask", json={"question": questions[i % len(questions)]}, timeout=300)
                elapsed = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        latencies.append(elapsed)
                        batch_sizes.append(r.json()["batch_size"])
                    else:
                        failures.append(f"{r.status_code} {r.text[:200]}")

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        for f in [ex.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    if failures:
        raise RayragError(f"{len(failures)} of {n} requests failed, e.g. {failures[0]}")
    return {"seconds": wall, "qps": n / wall, **percentiles(latencies),
            "mean_batch": statistics.fmean(batch_sizes) if batch_sizes else 0.0}


def percentiles(latencies: list[float]) -> dict:
    xs = sorted(latencies)

    def q(p: float) -> float:
        return xs[min(len(xs) - 1, max(0, round(p * (len(xs) - 1))))]

    return {"p50_s": q(0.50), "p90_s": q(0.90), "p99_s": q(0.99), "max_s": xs[-1], "mean_s": statistics.fmean(xs)}


def floor(model: Path, questions: list[str], batch: int, n: int) -> dict:
    """The model answering in this process, no server: seconds per batch of 1 and per batch of `batch`."""
    from rayrag.evaluate.loading import answering
    from rayrag.evaluate.predict import predict
    from rayrag.cluster.args import ClusterArgs
    from rayrag.kb.args import KbArgs
    from rayrag.retrieval.options import RetrievalArgs

    with answering(model, KbArgs(), RetrievalArgs(), ClusterArgs()) as loaded:
        predict(loaded, questions[:batch], batch_size=batch, progress=False)  # warm-up
        singles = []
        for q in questions[:n]:
            t0 = time.perf_counter()
            predict(loaded, [q], batch_size=1, progress=False)
            singles.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        chunks = [questions[(i * batch) % len(questions):][:batch] for i in range(max(1, n // batch))]
        for chunk in chunks:
            predict(loaded, chunk, batch_size=len(chunk), progress=False)
        batched = time.perf_counter() - t0
    answered = sum(len(c) for c in chunks)
    return {"single_p50_s": statistics.median(singles), "single_qps": len(singles) / sum(singles),
            "batch": batch, "batch_qps": answered / batched}


def settings(opts: BenchServeOptions) -> list[dict]:
    """Every (replicas, batching, wait) setting: one per wait with batching, one without."""
    return [{"replicas": r, "batching": b, "wait_s": w if b else None} for r in opts.replicas for b in opts.batching
            for w in (opts.batch_wait_timeout_s if b else [None])]


def server_args(opts: BenchServeOptions, s: dict) -> list[str]:
    batch = ["--max_batch_size", str(opts.batch_size), "--batch_wait_timeout_s", str(s["wait_s"])] \
        if s["batching"] else ["--max_batch_size", "1"]
    return ["--model", str(opts.model), "--replicas", str(s["replicas"]), *batch, "--quiet"]


def key(s: dict) -> tuple:
    return s["replicas"], s["batching"], s["wait_s"]


def label(s: dict) -> str:
    how = f"batching, wait {s['wait_s'] * 1000:g} ms" if s["batching"] else "no batching"
    return f"{s['replicas']} replica{'s' if s['replicas'] > 1 else ''}, {how}"


def run_bench(opts: BenchServeOptions, command: str, progress: bool = True) -> dict:
    """Every setting in every round (shuffled within each), the floor first; results.json/.md/.png in `opts.out`."""
    import torch

    opts.out.mkdir(parents=True, exist_ok=True)
    questions = read_questions(opts.questions)
    t_start = time.perf_counter()
    if progress:
        print("floor: the model answering in this process, no server", flush=True)
    threads = torch.get_num_threads()
    base = floor(opts.model, questions, opts.clients, min(len(questions), 64))
    torch.set_num_threads(threads)
    rng = random.Random(opts.seed)
    runs: list[dict] = []
    for round_ in range(opts.rounds):
        order = settings(opts)
        rng.shuffle(order)
        for s in order:
            if progress:
                print(f"round {round_ + 1}/{opts.rounds}: {label(s)}", flush=True)
            server = ServerProcess(server_args(opts, s), opts.out / f"serve-{len(runs)}.log")
            try:
                server.wait_ready()
                load(server.url, questions, opts.warmup, opts.clients)
                result = load(server.url, questions[opts.warmup:] or questions, opts.requests, opts.clients)
            finally:
                server.stop()
            runs.append({**s, "round": round_, **result})
            if progress:
                print(f"  {result['qps']:.2f} questions/s, p50 {result['p50_s'] * 1000:.0f} ms, "
                      f"p99 {result['p99_s'] * 1000:.0f} ms, mean batch {result['mean_batch']:.1f}", flush=True)
    rows = []
    for s in settings(opts):
        mine = [r for r in runs if key(r) == key(s)]
        rows.append({**s, "label": label(s),
                     **{k: statistics.median(r[k] for r in mine) for k in ("qps", "p50_s", "p99_s", "mean_batch")},
                     "qps_min": min(r["qps"] for r in mine), "qps_max": max(r["qps"] for r in mine),
                     "p99_s_min": min(r["p99_s"] for r in mine), "p99_s_max": max(r["p99_s"] for r in mine)})
    from rayrag.bench.run import machine

    result = {"command": command, "commit": _commit(), "machine": machine(),
              "options": {k: str(v) for k, v in dataclasses.asdict(opts).items()}, "floor": base, "rows": rows,
              "runs": runs, "seconds": time.perf_counter() - t_start}
    (opts.out / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (opts.out / "results.md").write_text(table(result), encoding="utf-8")
    plot(result, opts.out / "results.png")
    return result


def _commit() -> str | None:
    with contextlib.suppress(Exception):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    return None


def table(result: dict) -> str:
    opts, f = result["options"], result["floor"]
    lines = [f"{opts['requests']} questions from {opts['clients']} concurrent clients per setting; each column the "
             f"median over {opts['rounds']} rounds (min-max)", "",
             "| setting | questions/s | p50 latency | p99 latency | mean batch |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['label']} | {r['qps']:.2f} ({r['qps_min']:.2f}-{r['qps_max']:.2f}) | "
                     f"{r['p50_s'] * 1000:.0f} ms | {r['p99_s'] * 1000:.0f} ms ({r['p99_s_min'] * 1000:.0f}-"
                     f"{r['p99_s_max'] * 1000:.0f}) | {r['mean_batch']:.1f} |")
    lines += ["", f"Floor, no server: one question {f['single_p50_s'] * 1000:.0f} ms ({f['single_qps']:.2f} "
              f"questions/s); batches of {f['batch']}: {f['batch_qps']:.2f} questions/s."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, f = result["rows"], result["floor"]
    names = [f"{r['replicas']} repl.\n" + (f"wait {r['wait_s'] * 1000:g} ms" if r["batching"] else "no batching")
             for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(11, 1.6 * len(rows)), 4.5))
    a.bar(names, [r["qps"] for r in rows], yerr=[[r["qps"] - r["qps_min"] for r in rows],
                                                 [r["qps_max"] - r["qps"] for r in rows]], capsize=3)
    a.axhline(f["batch_qps"], color="tab:red", ls="--", label=f"no server, batches of {f['batch']}")
    a.axhline(f["single_qps"], color="tab:gray", ls=":", label="no server, one at a time")
    a.set_ylabel("questions per second")
    a.tick_params(axis="x", labelsize=8)
    a.legend(fontsize=8)
    b.bar(names, [r["p50_s"] * 1000 for r in rows], label="p50")
    b.bar(names, [(r["p99_s"] - r["p50_s"]) * 1000 for r in rows], bottom=[r["p50_s"] * 1000 for r in rows],
          label="p99", alpha=0.6)
    b.axhline(f["single_p50_s"] * 1000, color="tab:gray", ls=":", label="no server, one question")
    b.set_ylabel("latency (ms)")
    b.tick_params(axis="x", labelsize=8)
    b.legend(fontsize=8)
    opts = result["options"]
    fig.suptitle(f"rayrag serve: {opts['requests']} questions, {opts['clients']} concurrent clients, "
                 f"{result['machine']['logical_cores']} CPUs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
