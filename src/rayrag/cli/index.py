"""Build a knowledge base directory from documents.

Reads JSONL, TSV, CSV or Parquet files with `title` and `text` (a headerless two-column TSV is read
as title<TAB>text), splits each text into passages of --passage-words words, embeds them with a
DPR context encoder (or any BERT-style checkpoint; default: the packaged MiniLM), builds a FAISS
index and writes passages + index + manifest.json atomically to --out.

Example:
  rayrag index --docs my_docs.jsonl --out kb/ --index-type hnsw
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rayrag import encoders
from rayrag.kb.faiss_index import INDEX_TYPES, IndexParams

HELP = "documents -> knowledge base directory (passages, FAISS index, manifest)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--docs", nargs="+", type=Path, required=True, metavar="FILE",
                   help="document files (.jsonl, .tsv, .csv, .parquet) with title and text")
    p.add_argument("--out", type=Path, required=True, help="knowledge base directory to write")
    p.add_argument("--encoder", default=encoders.MINILM,
                   help="context encoder: hub name, local path, `minilm` (packaged, default) or `tiny` "
                        "(random, for tests; saved inside the knowledge base)")
    p.add_argument("--passage-words", type=int, default=100, help="words per passage (default: 100)")
    p.add_argument("--index-type", choices=INDEX_TYPES, default="flat", help="FAISS index type (default: flat)")
    d = IndexParams()
    p.add_argument("--hnsw-m", type=int, default=d.hnsw_m, help="HNSW neighbours per node")
    p.add_argument("--hnsw-ef-construction", type=int, default=d.hnsw_ef_construction, help="HNSW build breadth")
    p.add_argument("--hnsw-ef-search", type=int, default=d.hnsw_ef_search, help="HNSW search breadth")
    p.add_argument("--ivf-nlist", type=int, default=d.ivf_nlist, help="IVF-PQ cells (0: about 4*sqrt(N))")
    p.add_argument("--pq-m", type=int, default=d.pq_m, help="IVF-PQ sub-quantizers (0: pick)")
    p.add_argument("--pq-nbits", type=int, default=d.pq_nbits, help="IVF-PQ bits per code")
    p.add_argument("--ivf-nprobe", type=int, default=d.ivf_nprobe, help="IVF-PQ cells searched per query")
    p.add_argument("--batch-size", type=int, default=64, help="passages per encoder batch")
    p.add_argument("--max-length", type=int, default=256, help="maximum passage length in tokens")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from rayrag.kb.build import build

    params = IndexParams(hnsw_m=args.hnsw_m, hnsw_ef_construction=args.hnsw_ef_construction,
                         hnsw_ef_search=args.hnsw_ef_search, ivf_nlist=args.ivf_nlist, pq_m=args.pq_m,
                         pq_nbits=args.pq_nbits, ivf_nprobe=args.ivf_nprobe)
    report = build(args.docs, args.out, encoder=args.encoder, passage_words=args.passage_words,
                   index_type=args.index_type, params=params, batch_size=args.batch_size,
                   max_length=args.max_length, overwrite=args.overwrite, progress=not args.quiet)
    print(f"knowledge base written to {args.out}: {report.documents} documents -> {report.passages} passages "
          f"({report.dim}-d, {report.index_type} index), {len(report.skipped)} rows skipped")
    for entry in report.skipped[:10]:
        print(f"  skipped {entry}")
    if len(report.skipped) > 10:
        print(f"  ... and {len(report.skipped) - 10} more (see the log)")
    return 0
