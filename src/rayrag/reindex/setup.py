"""What `rayrag train --train_context_encoder` adds to a run: the context encoder it trains, the `Reindexer` that keeps
the index in step with it, and the knowledge base re-embedded by the best model's context encoder at the end."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from rayrag.errors import RayragError
from rayrag.kb.layout import KbLocation
from rayrag.model.assemble import recorded_encoder
from rayrag.reindex.callback import INDEX_DIR, Reindexer
from rayrag.reindex.job import ReindexJob, run, source_passages

log = logging.getLogger(__name__)

FINAL_KB = "kb"
"""The knowledge base a run writes in OUTPUT_DIR, embedded by the best model's context encoder."""


def context_encoder_name(opts, info, kb: KbLocation) -> str:
    """--context_encoder_name, else the model's own context encoder, else the knowledge base's encoder."""
    if opts.context_encoder_name:
        return opts.context_encoder_name
    if info.context_encoder:
        return str(Path(opts.model_name_or_path) / info.context_encoder)
    name = recorded_encoder(kb)
    if not name:
        raise RayragError(f"--train_context_encoder: the knowledge base {kb} records no encoder (a Hugging Face RAG "
                          "knowledge base); name the context encoder its vectors came from with --context_encoder_name, "
                          "e.g. facebook/dpr-ctx_encoder-multiset-base")
    return name


def check(job) -> None:
    """Refuse --train_context_encoder where it cannot work, before any training: a closed-book model, a knowledge
    base without passage texts."""
    if not job.opts.train_context_encoder:
        return
    if not job.info.is_rag:
        raise RayragError(f"--train_context_encoder: {job.opts.model_name_or_path} is a closed-book "
                          f"{job.info.model_type} model, which retrieves nothing; drop the flag")
    source_passages(job.kb.kb, job.kb.index_path)


def load_context_encoder(job):
    """The `encoders.context.ContextEncoder` the run trains, pooling as its knowledge base was pooled."""
    from rayrag.encoders.load import load_trainable_context_encoder
    from rayrag.model.checkpoint import kb_pooling

    name = context_encoder_name(job.opts, job.info, job.kb)
    encoder = load_trainable_context_encoder(name, kb_pooling(job.kb))
    log.info("training the context encoder %s (%s pooling) with the question encoder and generator", name,
             encoder.pooling)
    return encoder


def template(job) -> ReindexJob:
    """What every re-index of `job` shares: the source knowledge base, its pooling, index type and parameters, and
    the engine (Ray workers with --cluster.address, else a background process)."""
    from rayrag.kb.store import KnowledgeBase
    from rayrag.model.checkpoint import kb_pooling

    opts, kb = job.opts, job.kb
    manifest = KnowledgeBase(kb.kb, index_path=kb.index_path, load_index=False, verify_checksums=False).manifest
    index_type = manifest.index_type if manifest.index_type in ("flat", "hnsw", "ivfpq") else "flat"
    return ReindexJob(number=0, step=0, encoder="", source=kb.kb, source_index_path=kb.index_path, out="",
                      pooling=kb_pooling(kb), index_type=index_type, index_params=dict(manifest.index_params or {}),
                      passage_words=manifest.passage_words, n_documents=manifest.n_documents,
                      threads=opts.reindex_threads, ray_address=opts.cluster.address, workers=opts.reindex_workers,
                      use_gpu=opts.cluster.use_gpu)


def reindexer(job) -> Reindexer:
    """The callback of `job` (a run with --train_context_encoder)."""
    return Reindexer(Path(job.opts.output_dir), job.opts.reindex_every, template(job), kb_encoder=recorded_encoder(job.kb))


def final_knowledge_base(job, encoder) -> KbLocation:
    """Re-embed the knowledge base with `encoder` (the best model's context encoder) into OUTPUT_DIR/kb, an ordinary
    rayrag knowledge base that holds the encoder; on the Ray cluster of --cluster.address, else in this process with
    every core."""
    import dataclasses

    from rayrag.distributed import cores

    out = Path(job.opts.output_dir)
    snapshot = encoder.copy_for_snapshot().save(out / INDEX_DIR / "final.encoder")
    # on the cluster when one was given, unless this process is itself a Ray worker (a `--launcher ray` rank),
    # which then embeds with its own cores: training is over
    inside_ray = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    address = None if inside_ray else job.opts.cluster.address
    final = dataclasses.replace(template(job), number=-1, step=-1, encoder=str(snapshot), out=str(out / FINAL_KB),
                                ray_address=address, threads=job.opts.reindex_threads if address else cores())
    log.info("re-embedding the knowledge base with the best model's context encoder into %s", final.out)
    run(final, progress=job.opts.progress)
    shutil.rmtree(snapshot, ignore_errors=True)  # the knowledge base holds a copy (encoder/)
    return KbLocation(str(Path(final.out).resolve()), None)
