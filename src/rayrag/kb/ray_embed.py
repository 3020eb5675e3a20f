"""Embed passages with a Ray Data pipeline: a pool of encoder actors on a Ray cluster, resumable from shards on disk.

`rayrag index --ray` uses this in place of the single-process `encoders.embed_passages`; everything around it
(reading documents, the FAISS index, the atomic knowledge-base write) stays as it is. The pipeline:

    passages not yet embedded, sorted by length, cut into shards of `shard_rows`   ray.data.from_blocks (id, title, text)
      -> map_batches(_Encoder, compute=ActorPoolStrategy(size=num_workers))         one shard per call, on any node
      -> iter_batches on the driver                                                 (id, embeddings) per shard
      -> each shard written atomically to SHARDS/shard-RUN-K.npz                     resume point

Each actor runs `encoders.embed_passages` with the pooling of the plain build, so the vectors equal the
single-process build's (within float noise from different batch shapes). Ray Data does not keep block order, so every
row carries its passage id and the driver puts each vector back in its row. The encoder is loaded once, on the driver,
and sent to the actors through the object store: the worker nodes need no copy of the checkpoint.

SHARDS is `.NAME.embedding/` beside the knowledge base `NAME`, with `job.json` naming what its shards are of (a
fingerprint of the passages, the encoder's weights and tokenizer, pooling and max length). A rerun with the same job
embeds only the passages no shard holds; another job starts the directory over. `build` removes it once the
knowledge base is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rayrag import encoders
from rayrag.errors import RayragError
from rayrag.atomic import atomic_write_text, atomic_write_with, remove_stale_temporaries

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
SHARD_PATTERN = re.compile(r"shard-[0-9a-f]+-\d+\.npz")
MAX_SHARD_ROWS = 4096
"""Passages per shard at most: what one actor call embeds and what a killed run loses at most per worker."""
SHARDS_PER_WORKER = 4
"""Shards per worker at least (when the passages allow), so that every worker gets work and the load evens out."""


@dataclass
class RayEmbedSettings:
    """Where and how wide the Ray Data pipeline runs (`rayrag index --ray`)."""

    num_workers: int = 1
    """Encoder actors in the pool."""
    cpus_per_worker: float = 1.0
    """CPUs each actor requests (fractions allowed); also its torch thread count (at least 1)."""
    use_gpu: bool = False
    """Each actor requests one GPU and embeds on it."""
    address: str | None = None
    """Ray cluster to join (`auto`, HOST:PORT, ray://...); None or `local`: start a private local instance."""


@dataclass
class RayEmbedReport:
    """What `embed_with_ray` did: passages embedded now, passages found in shards of an earlier run, seconds of the
    pipeline, and of them the seconds until the first shard came back (starting the actors, sending the encoder)."""

    embedded: int
    resumed: int
    seconds: float
    workers: int
    startup_s: float = 0.0

    @property
    def passages_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else float("nan")


def shard_dir(out: str | Path) -> Path:
    """Where the embedding shards of the knowledge base `out` live while it is built: `.NAME.embedding/` beside it."""
    out = Path(out)
    return out.with_name(f".{out.name}.embedding")


def remove_shards(out: str | Path) -> None:
    """Remove the embedding shards of `out` (after its knowledge base is written)."""
    d = shard_dir(out)
    if d.exists():
        shutil.rmtree(d, ignore_errors=True)
        log.info("removed the embedding shards %s", d)


def fingerprint(model, tokenizer, titles: Sequence[str], texts: Sequence[str], *, pooling: str,
                max_length: int) -> str:
    """sha256 of what the vectors depend on: the passages, the encoder's weights and tokenizer, pooling, max length."""
    h = hashlib.sha256()
    h.update(json.dumps({"pooling": pooling, "max_length": max_length, "n": len(texts)}).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))).encode())
    for title, text in zip(titles, texts):
        h.update(title.encode("utf-8", "surrogatepass") + b"\x00" + text.encode("utf-8", "surrogatepass") + b"\x01")
    return h.hexdigest()


def shard_rows(n: int, num_workers: int, batch_size: int) -> int:
    """Passages per shard: at most `MAX_SHARD_ROWS`, at least one encoder batch, and small enough that each of the
    `num_workers` gets `SHARDS_PER_WORKER` shards when there are enough passages."""
    return max(1, min(MAX_SHARD_ROWS, max(batch_size, math.ceil(n / (num_workers * SHARDS_PER_WORKER)))))


@contextmanager
def connected(settings: RayEmbedSettings) -> Iterator[str]:
    """Join (or start) Ray as `settings.address` says and check that the pool fits, before any long work; yields the
    cluster's address. `embed_with_ray` inside it uses this connection; leaving it disconnects (and stops a local
    instance it started)."""
    from rayrag.cluster import check_fits, connect

    with connect(settings.address) as connection:
        check_fits(settings.num_workers, settings.cpus_per_worker, settings.use_gpu, where=connection.address,
                   what="encoder workers")
        yield connection.address


class _Encoder:
    """One actor of the pool: the encoder, sent by the driver; each call embeds one shard (a block of passages)."""

    def __init__(self, encoder: list, *, pooling: str, batch_size: int, max_length: int, threads: int):
        import ray
        import torch

        torch.set_num_threads(threads)
        model, self.tokenizer = ray.get(encoder[0])  # (model, tokenizer), put once in the object store by the driver
        self.model = model.eval()
        self.pooling, self.batch_size, self.max_length = pooling, batch_size, max_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = encoders.embed_passages(self.model, self.tokenizer, [str(t) for t in batch["title"]],
                                          [str(t) for t in batch["text"]], batch_size=self.batch_size,
                                          max_length=self.max_length, progress=False, pooling=self.pooling)
        return {"id": np.asarray(batch["id"], dtype=np.int64), "embeddings": vectors}


def _save_shard(path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, ids=ids, vectors=vectors)

    atomic_write_with(path, write)


def _load_shards(shards: Path, job: dict, n: int, dim: int, out: np.ndarray, done: np.ndarray) -> int:
    """Fill `out` (n, dim) and `done` (n,) bool from the shards of `job` in `shards`; returns the passages found.
    Shards of another job, unreadable shards and temporaries of dead processes are removed."""
    if not shards.is_dir():
        return 0
    for p in shards.iterdir():
        m = re.fullmatch(r"\.(.+)\.tmp-\d+", p.name)
        if m:
            remove_stale_temporaries(shards / m.group(1))
    job_file = shards / JOB_FILE
    try:
        earlier = json.loads(job_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if earlier != job:
        if earlier is not None or any(SHARD_PATTERN.fullmatch(p.name) for p in shards.iterdir()):
            log.warning("%s: shards of another job (other passages, encoder, pooling or max length): starting over",
                        shards)
        shutil.rmtree(shards)
        return 0
    found = 0
    for p in sorted(shards.iterdir()):
        if not SHARD_PATTERN.fullmatch(p.name):
            continue
        try:
            with np.load(p) as z:
                ids, vectors = z["ids"].astype(np.int64), z["vectors"]
            if ids.ndim != 1 or vectors.shape != (len(ids), dim) or len(ids) and (ids.min() < 0 or ids.max() >= n):
                raise ValueError(f"ids {ids.shape} and vectors {vectors.shape} do not fit {n} passages of size {dim}")
        except (OSError, ValueError, KeyError) as e:
            log.warning("%s: unreadable shard (%s); its passages are embedded again", p, e)
            p.unlink(missing_ok=True)
            continue
        out[ids] = vectors
        found += int((~done[ids]).sum())
        done[ids] = True
    return found


def embed_with_ray(model, tokenizer, titles: Sequence[str], texts: Sequence[str], *, shards: Path,
                   settings: RayEmbedSettings, batch_size: int = 64, max_length: int = 256, pooling: str = "cls",
                   progress: bool = True) -> tuple[np.ndarray, RayEmbedReport]:
    """Context vectors (N, d) float32 of the passages (`titles`, `texts`: N each), as `encoders.embed_passages`
    makes them, computed by a pool of `settings.num_workers` Ray actors; shards of finished work go to `shards`, and
    those a killed earlier run of the same job left there are used instead of embedded again."""
    n = len(texts)
    dim = encoders.output_dim(model)
    t0 = time.perf_counter()
    job = {"fingerprint": fingerprint(model, tokenizer, titles, texts, pooling=pooling, max_length=max_length),
           "passages": n, "dim": dim}
    log.info("embedding job fingerprint %s (%.1f s)", job["fingerprint"][:12], time.perf_counter() - t0)
    vectors = np.zeros((n, dim), dtype=np.float32)
    done = np.zeros(n, dtype=bool)
    resumed = _load_shards(shards, job, n, dim, vectors, done)
    shards.mkdir(parents=True, exist_ok=True)
    atomic_write_text(shards / JOB_FILE, json.dumps(job, indent=1))
    if resumed:
        log.info("resuming: %d of %d passages already embedded in %s", resumed, n, shards)
    todo = np.flatnonzero(~done)
    if len(todo) == 0:
        return vectors, RayEmbedReport(embedded=0, resumed=resumed, seconds=0.0, workers=0)

    with connected(settings):  # within the CLI's own `connected`, its connection
        embedded, seconds, startup = _run_pipeline(
            model, tokenizer, titles, texts, todo, shards=shards, settings=settings, batch_size=batch_size,
            max_length=max_length, pooling=pooling, progress=progress, total=n, vectors=vectors, done=done)
    missing = np.flatnonzero(~done)
    if len(missing):
        raise RayragError(f"{shards}: the Ray pipeline returned no vector for {len(missing)} passages (first: "
                          f"{missing[:5].tolist()}); run the same `rayrag index --ray` again to embed them")
    log.info("embedded %d passages with %d Ray workers in %.1f s (%.1f passages/s); %d from an earlier run",
             embedded, settings.num_workers, seconds, embedded / max(seconds, 1e-9), resumed)
    return vectors, RayEmbedReport(embedded=embedded, resumed=resumed, seconds=seconds, workers=settings.num_workers,
                                   startup_s=startup)


def _run_pipeline(model, tokenizer, titles, texts, todo: np.ndarray, *, shards: Path, settings: RayEmbedSettings,
                  batch_size: int, max_length: int, pooling: str, progress: bool, total: int, vectors: np.ndarray,
                  done: np.ndarray) -> tuple[int, float, float]:
    """Embed the passages `todo` (ids) through Ray Data; fills `vectors`/`done` and writes a shard per block.
    Returns the passages embedded, the seconds, and the seconds until the first shard."""
    import pyarrow as pa
    import ray
    from ray.data import ActorPoolStrategy, DataContext
    from tqdm.auto import tqdm

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # one bar, below, counts passages across runs
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"

    # Sort by length, as embed_passages does within a call, so that each shard pads little.
    order = todo[np.argsort([len(texts[i]) for i in todo], kind="stable")]
    rows = shard_rows(len(order), settings.num_workers, batch_size)
    blocks = [pa.table({"id": pa.array(ids, pa.int64()), "title": pa.array([titles[i] for i in ids], pa.string()),
                        "text": pa.array([texts[i] for i in ids], pa.string())})
              for ids in (order[s:s + rows] for s in range(0, len(order), rows))]
    log.info("embedding %d passages in %d shards of up to %d with %d Ray workers (%g CPU%s each)", len(order),
             len(blocks), rows, settings.num_workers, settings.cpus_per_worker, ", 1 GPU" if settings.use_gpu else "")
    run = uuid.uuid4().hex[:8]
    t0 = time.perf_counter()
    # from_blocks keeps one block per shard and takes their metadata here; from_arrow would run a Ray task per table
    # for it (each asking for a CPU, and on this machine that task's worker aborted when Ray reclaimed it).
    dataset = ray.data.from_blocks(blocks).map_batches(
        _Encoder, batch_size=None, batch_format="numpy", compute=ActorPoolStrategy(size=settings.num_workers),
        # wrapped in a list so that Ray passes the reference and each actor fetches the encoder itself
        fn_constructor_args=([ray.put((model, tokenizer))],),
        fn_constructor_kwargs=dict(pooling=pooling, batch_size=batch_size, max_length=max_length,
                                   threads=max(1, int(settings.cpus_per_worker))),
        num_cpus=settings.cpus_per_worker, num_gpus=1 if settings.use_gpu else 0)
    embedded, startup = 0, 0.0
    bar = tqdm(total=total, initial=total - len(order), unit="passage", disable=not progress,
               desc=f"embedding passages ({settings.num_workers} Ray worker{'s' if settings.num_workers > 1 else ''})")
    try:
        for k, batch in enumerate(dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0)):
            startup = startup or time.perf_counter() - t0
            ids = np.asarray(batch["id"], dtype=np.int64)
            got = np.asarray(batch["embeddings"], dtype=np.float32).reshape(len(ids), -1)
            _save_shard(shards / f"shard-{run}-{k:06d}.npz", ids, got)
            vectors[ids] = got
            done[ids] = True
            embedded += len(ids)
            bar.update(len(ids))
    finally:
        bar.close()
    return embedded, time.perf_counter() - t0, startup


__all__ = ["RayEmbedReport", "RayEmbedSettings", "connected", "embed_with_ray", "remove_shards", "shard_dir"]
