"""Time one re-index of `train --train_context_encoder` on a knowledge base, as training runs it: the context encoder
saved as a snapshot, then `python -m rayrag.reindex.worker` (nice 10) embedding every passage, building the index and
writing the generation, then the switch (opening the new generation as a `local` client does).

    .venv/bin/python scripts/refresh_time.py --kb runs/realtext/kb --threads 1 2 --out docs/results/refresh_12k.json

Run it alone on the machine: each row is the seconds of one refresh, by stage (read, embed, write: the worker's own
clock), the worker's wall time (process start and imports included) and the switch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kb", type=Path, required=True, help="a rayrag knowledge base (its encoder is the snapshot)")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="worker threads to time, one refresh each")
    p.add_argument("--out", type=Path, required=True, help="results JSON")
    args = p.parse_args()

    from rayrag.encoders.load import load_trainable_context_encoder
    from rayrag.kb.store import KnowledgeBase
    from rayrag.reindex.job import ReindexJob
    from rayrag.reindex.worker import done_file
    from rayrag.kb.layout import KbLocation
    from rayrag.model.assemble import recorded_encoder
    from rayrag.retrieval.local import LocalSpec

    kb = KnowledgeBase(args.kb, load_index=False)
    m = kb.manifest
    rows = []
    with tempfile.TemporaryDirectory(dir=args.kb.parent) as scratch:
        scratch = Path(scratch)
        encoder = load_trainable_context_encoder(recorded_encoder(KbLocation(str(args.kb))), m.pooling)
        t0 = time.perf_counter()
        snapshot = encoder.copy_for_snapshot().save(scratch / "snapshot")
        snapshot_s = time.perf_counter() - t0
        client = LocalSpec(kb=str(args.kb)).connect()
        for threads in args.threads:
            job = ReindexJob(number=1, step=0, encoder=str(snapshot), source=str(args.kb), out=str(scratch / "gen"),
                             pooling=m.pooling, index_type=m.index_type, index_params=m.index_params,
                             passage_words=m.passage_words, n_documents=m.n_documents, threads=threads)
            job_file = scratch / "gen.job.json"
            job_file.write_text(job.to_json())
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "rayrag.reindex.worker", str(job_file)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            stages = json.loads(done_file(job_file).read_text())
            t0 = time.perf_counter()
            client.switch(1, job.out)
            switch_s = time.perf_counter() - t0
            rows.append({"threads": threads, "worker_wall_s": wall, "switch_s": switch_s,
                         **{f"{k}_s": v for k, v in stages.items()}})
            print(json.dumps(rows[-1]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"command": " ".join(["scripts/refresh_time.py", *sys.argv[1:]]), "commit": commit,
              "machine": {"logical_cores": os.cpu_count()}, "passages": len(kb), "dim": m.dim,
              "encoder": m.encoder, "pooling": m.pooling, "index_type": m.index_type, "snapshot_s": snapshot_s,
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
