"""Benchmark rayrag on this machine.

`rayrag bench retrieval` reproduces the reference's retrieval table: W training processes in one
torch.distributed (gloo) group, each making the full retrieval call of a training step (ids,
passage vectors and texts for B query vectors), then a simulated compute time and a small
all-reduce, as DDP would. Every backend runs in the same invocation on the same index. With
rayrag's best search settings: local (index in every process), pytorch (rank 0 serves all) and
ray:M (rayrag's pool of M actors). With the reference's behaviour: pytorch-hf (its torch.distributed
retriever: rank 0 serves, FAISS calls of 8, FAISS defaults) and ray-hf:M (its Ray pool: random
actor, a private index copy per actor, its settings). Only the retrieval calls are timed.

The headline is each step's critical path (the longest call of any rank), against pytorch-hf and
against the floor (the step's queries searched in one process); rank 0's columns are kept for the
reference's table. --rounds rounds each run every (backend, workers) cell once in a shuffled order;
the table gives the median over the rounds and their min-max.

Writes to --out: config.yaml (the options; `rayrag bench retrieval --config OUT/config.yaml`
reruns it), results.json (machine, load, command, floors, rows with every round), results.csv,
results.md (the tables) and results.png; the benchmark index is built once and reused.

Example (the full run of docs/BENCHMARKS.md: 84 runs, about 30-60 minutes on 2 cores):
  rayrag bench retrieval --workers 1,2,3,4 --backends local,pytorch,pytorch-hf,ray:1,ray:2,ray:4,ray-hf:4 \\
      --index_size 200000 --dim 768 --index_type flat --steps 20 --rounds 3 --out runs/bench
"""

from __future__ import annotations

import shlex
import sys

from rayrag.bench.options import BenchOptions
from rayrag.cli.aliases import dashed

HELP = "seconds per retrieval call by backend and training processes (the reference's table)"
OPTIONS = BenchOptions
ALIASES = dashed(BenchOptions)  # --index-size, --index-type, --batch-size, --n-docs, --cache-dir, ...


def run(opts: BenchOptions, quiet: bool) -> int:
    from rayrag.bench.run import run_benchmark
    from rayrag.config import write_config

    write_config(opts, opts.out)
    command = "rayrag " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = run_benchmark(opts, command=command, progress=not quiet)
    print(result.files["md"].read_text(encoding="utf-8"))
    for f in result.failed:
        print(f"FAILED {f['backend']} with {f['workers']} workers in round {f['round'] + 1}: "
              f"{f['error'].splitlines()[0]}")
    runs = sum(r["rounds_measured"] for r in result.rows)
    print(f"{len(result.rows)} rows from {runs} runs ({opts.rounds} rounds) in {result.seconds:.0f} s; results "
          "written to " + ", ".join(str(p) for p in result.files.values()))
    return 1 if result.failed else 0
