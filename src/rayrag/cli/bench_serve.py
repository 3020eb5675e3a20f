"""Load-test `rayrag serve` on this machine: questions per second and latency, by replicas, with and without
batching.

Each setting starts the real server on a free loopback port, warms it up, asks it --requests questions from
--clients concurrent clients (each asks its next question when its last is answered), and stops it. Settings run in
a shuffled order in each of --rounds rounds; the table gives the median over rounds. The floor is the model answering in
this process with no server. Writes results.json, results.md and results.png to --out.

Example (after `rayrag demo`, whose model and questions are the defaults):
  rayrag bench serve
  rayrag bench serve --model runs/x/best_model --questions data/val.source --replicas [1,2,4] --clients 16
  rayrag bench serve --batch_wait_timeout_s [0.02,0.05,0.1]   # one batching setting per wait
"""

from __future__ import annotations

import shlex
import sys

from rayrag.serving.load import BenchServeOptions

HELP = "questions per second and latency of `rayrag serve`, by replicas, with and without batching"
OPTIONS = BenchServeOptions
ALIASES: dict[str, str] = {}


def run(opts: BenchServeOptions, quiet: bool) -> int:
    from rayrag.serving.load import run_bench

    command = "rayrag " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = run_bench(opts, command=command, progress=not quiet)
    print(f"\n{(opts.out / 'results.md').read_text(encoding='utf-8')}")
    print(f"{len(result['runs'])} runs in {result['seconds']:.0f} s; results written to {opts.out}")
    return 0
