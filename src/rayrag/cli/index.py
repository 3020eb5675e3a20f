"""Build a knowledge base directory from documents.

Reads JSONL, TSV, CSV or Parquet files with `title` and `text` (a headerless two-column TSV is read
as title<TAB>text), splits each text into passages of --passage_words words, embeds them with a
DPR context encoder (or any BERT-style checkpoint; default: the packaged MiniLM), builds a FAISS
index (--index_type; the hnsw and ivfpq parameters are --index.*) and writes passages + index +
manifest.json atomically to --out.

Example:
  rayrag index --docs my_docs.jsonl more_docs.tsv --out kb/ --index_type hnsw --index.hnsw_m 48
"""

from __future__ import annotations

from rayrag.cli.aliases import dashed, flat
from rayrag.kb.faiss_index import IndexParams
from rayrag.kb.options import IndexOptions

HELP = "documents -> knowledge base directory (passages, FAISS index, manifest)"
OPTIONS = IndexOptions
ALIASES = {
    **dashed(IndexOptions),  # --passage-words, --index-type, --batch-size, --max-length
    **dashed(IndexParams, "index."),  # --hnsw-m -> --index.hnsw_m, ...
    **flat(IndexParams, "index."),  # --hnsw_m -> --index.hnsw_m, ...
}


def run(opts: IndexOptions, quiet: bool) -> int:
    from rayrag.kb.build import build

    report = build(opts.docs, opts.out, encoder=opts.encoder, passage_words=opts.passage_words,
                   index_type=opts.index_type, params=opts.index, batch_size=opts.batch_size,
                   max_length=opts.max_length, overwrite=opts.overwrite, progress=not quiet)
    print(f"knowledge base written to {opts.out}: {report.documents} documents -> {report.passages} passages "
          f"({report.dim}-d, {report.index_type} index), {len(report.skipped)} rows skipped")
    for entry in report.skipped[:10]:
        print(f"  skipped {entry}")
    if len(report.skipped) > 10:
        print(f"  ... and {len(report.skipped) - 10} more (see the log)")
    return 0
