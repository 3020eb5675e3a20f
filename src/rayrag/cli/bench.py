"""Benchmark rayrag on this machine.

`rayrag bench retrieval` reproduces the reference's retrieval table: W training processes in one
torch.distributed (gloo) group, each making the full retrieval call of a training step (ids,
passage vectors and texts for B query vectors), then a simulated compute time and a small
all-reduce, as DDP would. Every backend runs in the same invocation on the same index: local
(index in every process), pytorch (rank 0 serves all, the reference's torch.distributed
retriever), ray:M (rayrag's pool of M actors) and ray-hf:M (the pool with the reference's policy:
random actor, a private index copy per actor). Only the retrieval calls are timed.

Writes to --out: config.yaml (the options; `rayrag bench retrieval --config OUT/config.yaml`
reruns it), results.json (machine, command, floor, rows), results.csv, results.md (the table in
the reference's shape) and results.png; the benchmark index is built once and reused.

Example (about 16 minutes on 2 cores; docs/BENCHMARKS.md has its results):
  rayrag bench retrieval --workers 2,3,4 --backends local,pytorch,ray:2,ray:4,ray-hf:2,ray-hf:4 \\
      --index_size 200000 --dim 768 --index_type flat --steps 15 --out runs/bench
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
        print(f"FAILED {f['backend']} with {f['workers']} workers (no row): {f['error'].splitlines()[0]}")
    print(f"{len(result.rows)} runs in {result.seconds:.0f} s; results written to "
          + ", ".join(str(p) for p in result.files.values()))
    return 1 if result.failed else 0
