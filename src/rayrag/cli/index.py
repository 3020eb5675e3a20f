"""Build a knowledge base directory from documents, or from a Hugging Face RAG knowledge base.

Reads JSONL, TSV, CSV or Parquet files with `title` and `text` (a headerless two-column TSV is read
as title<TAB>text), splits each text into passages of --passage_words words, embeds them with a
DPR context encoder (or any BERT-style checkpoint; default: the packaged MiniLM), builds a FAISS
index (--index_type; the hnsw and ivfpq parameters are --index.*) and writes passages + index +
manifest.json atomically to --out.

With --passages_path P --index_path I instead of --docs, it converts a knowledge base made by the
Hugging Face RAG example (use_own_knowledge_dataset.py: a `datasets` directory with title, text and
embeddings, and a FAISS file) without re-embedding: the passages and their vectors are copied, the
index is kept as it is (or, with --index_type, built anew from the stored vectors), and a manifest
with checksums is written. --encoder then records which context encoder made the vectors.

With --ray the passages are embedded by a Ray Data pipeline: a pool of --cluster.workers (--num_workers)
encoder actors on the Ray cluster (--cluster.address; unset: a private local instance),
--cluster.cpus_per_worker each (fractions allowed), --cluster.use_gpu for a GPU each. The vectors equal the single-process build's, and an interrupted build rerun with the same flags embeds
only the passages its finished shards (`.NAME.embedding/` beside --out) lack.

Examples:
  rayrag index --docs my_docs.jsonl more_docs.tsv --out kb/ --index_type hnsw --index.hnsw_m 48
  rayrag index --docs wiki.jsonl --out kb/ --ray --cluster.workers 8 --cluster.use_gpu --cluster.address auto
  rayrag index --passages_path out/my_knowledge_dataset --index_path out/my_knowledge_dataset_hnsw_index.faiss \\
      --out kb/ --encoder facebook/dpr-ctx_encoder-multiset-base
"""

from __future__ import annotations

import contextlib

from rayrag.cli.aliases import dashed, flat, part_spellings
from rayrag.kb.faiss_index import IndexParams
from rayrag.kb.options import IndexOptions

HELP = "documents (or a Hugging Face RAG knowledge base) -> knowledge base directory (passages, index, manifest)"
OPTIONS = IndexOptions
ALIASES = {
    **dashed(IndexOptions),  # --passage-words, --index-type, --batch-size, --max-length
    **dashed(IndexParams, "index."),  # --hnsw-m -> --index.hnsw_m, ...
    **flat(IndexParams, "index."),  # --hnsw_m -> --index.hnsw_m, ...
    **part_spellings(IndexOptions),  # --num_workers -> --cluster.workers, --ray_address -> --cluster.address, ...
    **{old.replace("_", "-"): new for old, new in part_spellings(IndexOptions).items()},  # --num-workers, ...
}


def run(opts: IndexOptions, quiet: bool) -> int:
    if opts.converts:
        from rayrag.kb.convert import convert

        # the example's use_own_knowledge_dataset.py embeds with DPRContextEncoder's pooler_output (first token),
        # whatever the encoder
        pooling = "cls" if opts.pooling == "auto" else opts.pooling
        report = convert(opts.passages_path, opts.index_path, opts.out, index_type=opts.index_type, params=opts.index,
                         encoder=opts.encoder, passage_words=opts.passage_words, overwrite=opts.overwrite,
                         pooling=pooling)
        how = "kept" if opts.index_type is None else "built from the stored vectors"
        print(f"knowledge base written to {opts.out}: {report.passages} passages converted from {opts.passages_path} "
              f"({report.dim}-d, {report.index_type} index {how})")
        return 0
    from rayrag.kb.build import build

    ray = _ray_settings(opts)
    cluster = contextlib.nullcontext()
    if ray is not None:
        from rayrag.kb.ray_embed import connected

        cluster = connected(ray)  # joined, and a pool that cannot fit refused, before the documents are read
    with cluster:
        report = build(opts.docs, opts.out, encoder=opts.encoder, passage_words=opts.passage_words,
                       index_type=opts.index_type, params=opts.index, batch_size=opts.batch_size,
                       max_length=opts.max_length, overwrite=opts.overwrite, progress=not quiet, pooling=opts.pooling,
                       ray=ray)
    print(f"knowledge base written to {opts.out}: {report.documents} documents -> {report.passages} passages "
          f"({report.dim}-d, {report.pooling} pooling, {report.index_type} index), {len(report.skipped)} rows "
          "skipped")
    if report.ray is not None:
        r = report.ray
        rate = (f" in {r.seconds:.1f} s ({r.passages_per_s:.1f} passages/s; {r.startup_s:.1f} s of it until the first "
                "shard came back)" if r.embedded else "")
        earlier = f"; {r.resumed} taken from the shards of an interrupted run" if r.resumed else ""
        print(f"  embedded {r.embedded} passages with {opts.cluster.workers} Ray worker(s){rate}{earlier}")
    for entry in report.skipped[:10]:
        print(f"  skipped {entry}")
    if len(report.skipped) > 10:
        print(f"  ... and {len(report.skipped) - 10} more (see the log)")
    return 0


def _ray_settings(opts: IndexOptions):
    """The `RayEmbedSettings` of --ray, or None without it."""
    if not opts.ray:
        return None
    from rayrag.kb.ray_embed import RayEmbedSettings

    return RayEmbedSettings(num_workers=opts.cluster.workers, cpus_per_worker=opts.cluster.cpus_per_worker,
                            use_gpu=opts.cluster.use_gpu, address=opts.cluster.address)
