"""One re-index: embed every passage of a knowledge base with a context encoder and write the result as an ordinary
rayrag knowledge base (passages with the new vectors, an index of the same type, the encoder inside as `encoder/`).

`run(job)` does it in this process; `python -m rayrag.reindex.worker JOB.json` does it in a background process for a
training run (`rayrag.reindex.callback`). It embeds with `encoders.embed_passages`, or with `index --ray`'s engine on
a Ray cluster (`kb.ray_embed.embed_with_ray`) when the job names one, and writes through
`kb.build.write_knowledge_base`: into a temporary sibling, renamed into place at the end, so a crash or a full disk
leaves no generation half-written under its name and whatever was there before intact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rayrag.errors import RayragError

log = logging.getLogger(__name__)


@dataclass
class ReindexJob:
    """What a re-index reads, how it embeds and where it writes; travels to a worker process as JSON."""

    number: int
    """The index generation this job makes (0 is the knowledge base training started from)."""
    step: int
    """The optimizer step whose context-encoder weights it embeds with."""
    encoder: str
    """Directory of those weights (`encoders.context.ContextEncoder.save`)."""
    source: str
    """The knowledge base whose passages it embeds (a rayrag directory, or a Hugging Face passages directory with
    `source_index_path`)."""
    out: str
    """The knowledge base it writes."""
    pooling: str
    index_type: str
    source_index_path: str | None = None
    index_params: dict = field(default_factory=dict)
    max_length: int = 256
    batch_size: int = 64
    passage_words: int = 100
    n_documents: int = 0
    threads: int = 1
    """Torch threads (each Ray worker's CPUs with `ray_address`)."""
    ray_address: str | None = None
    """Embed on this Ray cluster with `workers` workers (`index --ray`'s engine); None: in this process."""
    workers: int = 1
    use_gpu: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ReindexJob:
        return cls(**json.loads(text))


def source_passages(source: str, index_path: str | None = None) -> tuple[list[str], list[str]]:
    """Titles and texts of every passage of a knowledge base, in id order; refused (naming the knowledge base) when it
    has no passage texts to embed."""
    from rayrag.kb.store import KnowledgeBase

    kb = KnowledgeBase(source, index_path=index_path, load_index=False, verify_checksums=False)
    names = set(kb.table.column_names)
    if not {"title", "text"} <= names:
        raise RayragError(f"{kb.where}: its passages have no title/text columns, so there is nothing to re-embed; "
                          "--train_context_encoder needs a knowledge base with passage texts (`rayrag index`)")
    titles = [str(t) if t is not None else "" for t in kb.table.column("title").to_pylist()]
    texts = [str(t) if t is not None else "" for t in kb.table.column("text").to_pylist()]
    if not any(texts):
        raise RayragError(f"{kb.where}: every passage text is empty; --train_context_encoder needs passage texts")
    return titles, texts


def run(job: ReindexJob, progress: bool = False) -> dict:
    """Do `job`: embed, build the index, write `job.out` atomically (replacing an earlier one). Returns the seconds
    of each stage: read, embed, write (the index build included)."""
    import torch

    from rayrag import encoders
    from rayrag.kb.build import write_knowledge_base
    from rayrag.kb.faiss_index import IndexParams

    seconds = {}
    t0 = time.perf_counter()
    titles, texts = source_passages(job.source, job.source_index_path)
    model, tokenizer = encoders.load_context_encoder(job.encoder, flag="re-index encoder")
    seconds["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if job.ray_address is None:
        threads = torch.get_num_threads()
        torch.set_num_threads(job.threads)
        try:
            vectors = encoders.embed_passages(model, tokenizer, titles, texts, batch_size=job.batch_size,
                                              max_length=job.max_length, progress=progress, pooling=job.pooling)
        finally:
            torch.set_num_threads(threads)  # the caller's (training's, when it is the final knowledge base)
    else:
        from rayrag.kb import ray_embed

        settings = ray_embed.RayEmbedSettings(num_workers=job.workers, cpus_per_worker=float(job.threads),
                                              use_gpu=job.use_gpu, address=job.ray_address)
        vectors, _ = ray_embed.embed_with_ray(model, tokenizer, titles, texts, shards=ray_embed.shard_dir(job.out),
                                              settings=settings, batch_size=job.batch_size,
                                              max_length=job.max_length, pooling=job.pooling, progress=progress)
    seconds["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    known = {f.name for f in dataclasses.fields(IndexParams)}
    params = IndexParams(**{k: v for k, v in job.index_params.items() if k in known})
    write_knowledge_base(Path(job.out), titles, texts, vectors, encoder=job.encoder, index_type=job.index_type,
                         params=params, passage_words=job.passage_words, n_documents=job.n_documents,
                         overwrite=True, encoder_dir=Path(job.encoder), pooling=job.pooling)
    seconds["write"] = time.perf_counter() - t0
    if job.ray_address is not None:
        from rayrag.kb import ray_embed

        ray_embed.remove_shards(job.out)
    what = f"index generation {job.number} (weights of step {job.step})" if job.number >= 0 else "knowledge base"
    log.info("%s: %d passages re-embedded into %s; read %.1f s, embed %.1f s, write %.1f s", what, len(texts),
             job.out, seconds["read"], seconds["embed"], seconds["write"])
    return seconds
