"""Embedding throughput of `rayrag index`: the single-process build against `--ray` with 1 and 2 workers.

    python scripts/index_ray_throughput.py --out runs/index_ray --entities 400 10000
    python scripts/index_ray_throughput.py --out runs/index_ray --wiki_like 256 --runs plain

Corpora are synthetic (`rayrag.tasks.synthetic`, one short document per fact, so 400 entities make the demo's 2,000
passages and 10,000 entities 50,000). `--wiki_like N` instead makes N passages of 100 words (synthetic facts run
together, about the length of the 21M Wikipedia passages of DPR) embedded by a DPR-base-sized context encoder (768-d,
12 layers, random weights: its speed does not depend on the weights) with one thread: the per-CPU-worker rate to
extrapolate from. Each run is a fresh process calling `rayrag.kb.build.build` (the function behind `rayrag index`);
the table gives passages per second of the embedding stage as a user waits for it (for `--ray`: Ray started, actors
started, encoder sent) and of the pipeline after the first shard came back.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RUNS = {"plain": None, "ray1": 1, "ray2": 2}


def make_docs(path: Path, entities: int, wiki_like: int = 0) -> None:
    from rayrag.tasks.synthetic import make_corpus

    corpus = make_corpus(max(entities, 3), seed=0)
    docs = corpus.documents
    if wiki_like:  # run the facts together into documents of 100 words, one passage each
        words = " ".join(d["text"] for d in docs).split()
        while len(words) < wiki_like * 100:
            words = words + words
        docs = [{"title": f"Doc {i}", "text": " ".join(words[i * 100:(i + 1) * 100])} for i in range(wiki_like)]
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"title": d["title"], "text": d["text"]}) + "\n")


def dpr_base_sized(path: Path) -> Path:
    """A DPR context encoder of DPR-base's shape (random weights) with MiniLM's tokenizer (bert-base-uncased's vocab)."""
    if (path / "config.json").exists():
        return path
    import torch
    from transformers import AutoTokenizer, DPRConfig, DPRContextEncoder

    from rayrag.encoders import resolve

    torch.manual_seed(0)
    DPRContextEncoder(DPRConfig(vocab_size=30522)).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve("minilm")).save_pretrained(path)
    return path


def one(args) -> None:
    """One build, in this process; prints its timings as JSON."""
    import torch

    from rayrag.kb.build import build
    from rayrag.kb.ray_embed import RayEmbedSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    workers = RUNS[args.run]
    ray = None if workers is None else RayEmbedSettings(num_workers=workers, cpus_per_worker=args.cpus_per_worker)
    t0 = time.perf_counter()
    report = build([args.docs], args.kb, encoder=args.encoder, overwrite=True, progress=False, ray=ray,
                   max_length=args.max_length, batch_size=args.batch_size)
    embed = report.seconds["embed"]
    row = {"run": args.run, "passages": report.passages, "embed_s": round(embed, 2),
           "passages_per_s": round(report.passages / embed, 1), "total_s": round(time.perf_counter() - t0, 2)}
    if report.ray is not None:
        r = report.ray
        row.update(pipeline_s=round(r.seconds, 2), startup_s=round(r.startup_s, 2),
                   after_first_shard_per_s=round(r.embedded / max(r.seconds - r.startup_s, 1e-9), 1))
    print(json.dumps(row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/index_ray"))
    p.add_argument("--entities", type=int, nargs="*", default=[400, 10000])
    p.add_argument("--wiki_like", type=int, default=0)
    p.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--cpus_per_worker", type=float, default=1.0)
    p.add_argument("--max_length", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads of the single-process build (0: default)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run", default="plain")
    p.add_argument("--docs", type=Path)
    p.add_argument("--kb", type=Path)
    p.add_argument("--encoder", default="minilm")
    args = p.parse_args()
    if args.one:
        return one(args)
    args.out.mkdir(parents=True, exist_ok=True)
    corpora = ([("wiki_like", args.wiki_like)] if args.wiki_like else [(f"e{n}", n) for n in args.entities])
    rows = []
    for name, n in corpora:
        docs = args.out / f"{name}.jsonl"
        make_docs(docs, n, args.wiki_like)
        encoder = str(dpr_base_sized(args.out / "dpr-base-sized")) if args.wiki_like else "minilm"
        for run in args.runs:
            cmd = [sys.executable, __file__, "--one", "--run", run, "--docs", str(docs), "--kb",
                   str(args.out / f"kb-{name}-{run}"), "--encoder", encoder, "--cpus_per_worker",
                   str(args.cpus_per_worker), "--max_length", str(args.max_length), "--batch_size",
                   str(args.batch_size), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            row = {"corpus": name, **json.loads(out)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    (args.out / "throughput.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
