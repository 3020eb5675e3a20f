"""`rayrag train` as plain steps: prepare -> build the Trainer -> fit -> export the best model -> predict the test split.

    job = prepare(opts)                                  # checked, resolved, config.yaml written, model read
    with serving(retrieval_request(job)) as spec:        # the first process opens the retrieval service
        trainer = build_trainer(job)
        fitted = fit(job, trainer, spec)                 # every rank
    metrics = export(job, fitted)                        # rank 0: best_model/
    metrics |= predict_test(job)                         # --do_predict

`train()` composes them for the command line (and scripts); Ray Train's workers (`train/ray_launch.py`) and Ray
Tune's trials (`tune/trial.py`) compose the same steps with their own Trainer settings and the spec of a service
their driver opened.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rayrag.atomic import atomic_write_text, atomic_write_with
from rayrag.config import write_config
from rayrag.data.qa import has_split, load_split
from rayrag.distributed import is_first_process
from rayrag.errors import RayragError
from rayrag.evaluate.predict import predict, score, write_predictions
from rayrag.kb.layout import KbLocation
from rayrag.model.checkpoint import CONTEXT_DIR, KB_FIX, ModelInfo, check_pooling, load_model, read_info, record_kb, \
    save_model, with_type
from rayrag.retrieval.options import RetrievalOptions
from rayrag.retrieval.service import serving
from rayrag.train.batches import Collator
from rayrag.train.module import RagFineTuner
from rayrag.train.options import TrainOptions, reference_index_notes

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file, fsyncs it and renames it into place
    (`rayrag.atomic.atomic_write_with`): a crash mid-write leaves the previous checkpoint whole and no
    partial file under the checkpoint's name; temporaries of killed runs are removed by the next write."""

    last_saved: tuple[int, Path] | None = None
    """(global step, path) of the latest checkpoint this process wrote: `--launcher ray` reports that file to Ray
    Train instead of writing the same state again (`ray_launch.ReportCheckpoint`)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write_with(Path(path), lambda tmp: torch.save(checkpoint, tmp))
        self.last_saved = (int(checkpoint.get("global_step", -1)), Path(path))


@dataclass
class Job:
    """A run, prepared: its resolved options, the model it trains (`info`: the class --model_type picked) and the
    knowledge base it retrieves from (None for a closed-book model)."""

    opts: TrainOptions
    info: ModelInfo
    kb: KbLocation | None

    @property
    def out(self) -> Path:
        return Path(self.opts.output_dir)

    @property
    def best_dir(self) -> Path:
        """Where `export` writes the best model (a Hugging Face directory)."""
        return self.out / "best_model"


@dataclass
class Fitted:
    """What `fit` leaves: the trained module, its Trainer and the training metrics (train_seconds, train_steps)."""

    module: RagFineTuner
    trainer: L.Trainer
    metrics: dict


def prepare(opts: TrainOptions, *, config: bool = True) -> Job:
    """Check and resolve `opts`, make --output_dir, write its config.yaml there (`config`, in the first process:
    `rayrag train --config OUTPUT_DIR/config.yaml` reruns the run), read the model, find its knowledge base, and seed
every random generator with --seed."""
    opts.validate()
    opts = opts.resolved()
    Path(opts.output_dir).mkdir(parents=True, exist_ok=True)
    if config and is_first_process():
        write_config(opts, Path(opts.output_dir))
    info = _check_model(opts, read_info(Path(opts.model_name_or_path)))
    kb = opts.kb.location() or info.location
    if info.is_rag and kb is None:
        raise RayragError(f"{opts.model_name_or_path}: no knowledge base recorded; {KB_FIX}")
    job = Job(opts, info, kb if info.is_rag else None)
    if opts.train_context_encoder:
        from rayrag.reindex.setup import check

        check(job)
    for note in reference_index_notes(opts):
        log.info("%s", note)
    L.seed_everything(opts.seed, workers=True, verbose=False)
    return job


def retrieval_request(job: Job) -> RetrievalOptions | None:
    """The retrieval service `job` trains with (None: a closed-book model retrieves nothing)."""
    if job.kb is None:
        return None
    return RetrievalOptions.of(job.kb, job.opts.retrieval, ray_address=job.opts.cluster.address)


def train(opts: TrainOptions, callbacks: Sequence[L.Callback] = ()) -> dict:
    """`rayrag train` in this process (and, with --devices N, in the DDP processes Lightning starts): fit, export
    and predict as --do_train/--do_predict say; `callbacks` join the Trainer's. Returns what it writes to
    metrics.json (rank 0) or {} (other ranks)."""
    if opts.launcher == "ray":
        raise RayragError("--launcher ray: train with rayrag.train.ray_launch.train_on_ray (as `rayrag train` does)")
    job = prepare(opts)
    metrics: dict = {}
    if job.opts.do_train:
        trainer = build_trainer(job, callbacks=callbacks)
        with serving(retrieval_request(job)) as spec:
            fitted = fit(job, trainer, spec)
        if not trainer.is_global_zero:
            return {}
        metrics = export(job, fitted)
    return finish(job, metrics)


def finish(job: Job, metrics: dict) -> dict:
    """After training: predict the test split (--do_predict) with the best model (or the given one), write
    metrics.json; returns it."""
    if job.opts.do_predict:
        metrics = {**metrics, **predict_test(job)}
    atomic_write_text(job.out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def build_trainer(job: Job, *, callbacks: Sequence[L.Callback] = (), checkpoints: bool = True,
                  strategy=None, plugins: Sequence = ()) -> L.Trainer:
    """The Lightning Trainer of `job`. `checkpoints`: best.ckpt at validations and last.ckpt (every
    --save_every_n_steps steps, or at validations) in OUTPUT_DIR/checkpoints; `callbacks` run after those (a
    `Checkpoint` among them sees what they wrote); `strategy`/`plugins`: a launcher's own (Ray Train's), one device
    per process, instead of Lightning's DDP for --devices/--num_nodes."""
    opts, out = job.opts, job.out
    ckpt_dir = out / "checkpoints"
    found = [ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_em", mode="max",
                             save_last=opts.save_every_n_steps == 0, save_top_k=1,
                             enable_version_counter=False)] if checkpoints else []
    if checkpoints and opts.save_every_n_steps > 0:  # last.ckpt every N steps, for --resume after a crash
        found.append(ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True,
                                     every_n_train_steps=opts.save_every_n_steps, enable_version_counter=False))
    if opts.train_context_encoder:  # the index follows the context encoder, in generations
        from rayrag.reindex.setup import reindexer

        found.append(reindexer(job))
    found += list(callbacks)
    if opts.early_stopping_patience >= 0:
        found.append(EarlyStopping(monitor="val_em", mode="max", patience=max(1, opts.early_stopping_patience)))
    accelerator = "gpu" if opts.accelerator == "cuda" else opts.accelerator
    on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    devices, num_nodes = opts.devices, opts.num_nodes
    if strategy is not None:  # one device per process; the launcher's environment says who is where
        devices, num_nodes = 1, 1
    elif devices > 1 or num_nodes > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="nccl" if on_gpu else "gloo", find_unused_parameters=True)
    else:
        strategy = "auto"
    precision = ("16-mixed" if on_gpu else cpu_half_precision()) if opts.fp16 else "32-true"
    vci = opts.val_check_interval
    return L.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
        precision=precision, max_epochs=opts.num_train_epochs, max_steps=opts.max_steps,
        max_time={"minutes": opts.max_time_minutes} if opts.max_time_minutes > 0 else None,
        accumulate_grad_batches=opts.gradient_accumulation_steps,
        gradient_clip_val=opts.max_grad_norm or None, callbacks=found,
        logger=[CSVLogger(out, name="logs", version=""), TensorBoardLogger(out, name="tensorboard", version="")],
        val_check_interval=int(vci) if vci > 1 else vci, num_sanity_val_steps=0,
        check_val_every_n_epoch=None if vci > 1 else 1,  # N > 1: every N steps, across epochs
        log_every_n_steps=opts.log_every_n_steps, enable_progress_bar=opts.progress,
        enable_model_summary=opts.progress, enable_checkpointing=checkpoints,
        plugins=[AtomicCheckpointIO(), *plugins], deterministic=False, default_root_dir=out,
        use_distributed_sampler=False)


BF16_SLOWER_AT_MOST = 1.5
"""--fp16 on a CPU trains in bfloat16 only where a bfloat16 matrix product takes at most this many times float32's."""


def cpu_half_precision(ratio: float | None = None) -> str:
    """Lightning's precision for --fp16 on the CPU: bfloat16 autocast where this CPU multiplies bfloat16 natively
    (AVX512-BF16, AMX), else float32 with a warning: without it bfloat16 is emulated, and a 512x512 product measured
    92 times slower than in float32 on an AVX2 EPYC (a closed-book step of the real-text task 5.4 s instead of about
    0.6 s). `ratio`: bfloat16's time over float32's, measured here when not given (about 0.1 s)."""
    if ratio is None:
        ratio = _bf16_over_fp32()
    if ratio <= BF16_SLOWER_AT_MOST:
        return "bf16-mixed"
    log.warning("--fp16: bfloat16 is emulated on this CPU (%s; a matrix product takes %.0f times float32's), so "
                "training runs in float32; drop --fp16 to silence this", torch.backends.cpu.get_cpu_capability(),
                ratio)
    return "32-true"


def _bf16_over_fp32(n: int = 256, repeats: int = 5) -> float:
    """How many times longer an n x n bfloat16 matrix product takes than a float32 one on this CPU (best of repeats)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t0)
        best[dtype] = min(times)
    return best[torch.bfloat16] / max(best[torch.float32], 1e-9)


def fit(job: Job, trainer: L.Trainer, spec: str | None, ckpt_path: Path | None = None) -> Fitted:
    """Train `job` with `trainer`, retrieving through the service of `spec` (JSON; None in the ranks that get it
    from the first process, and for a closed-book model), from the Lightning checkpoint `ckpt_path` (default:
    checkpoints/last.ckpt with --resume). Every rank calls it."""
    opts, out = job.opts, job.out
    train_ex = load_split(opts.data_dir, "train", opts.n_train)
    val_ex = _validation_examples(opts, train_ex)
    loaded = load_model(opts.model_name_or_path, retrieval=False, info=job.info)
    if job.kb is not None:  # questions pooled as the knowledge base's passages were
        check_pooling(loaded.model, job.kb, str(opts.model_name_or_path))
    ckpt = ckpt_path or (out / "checkpoints" / "last.ckpt" if opts.resume else None)
    earlier_log = _read_log(out) if ckpt is not None else []  # Lightning's CSVLogger starts a new file
    t0 = time.perf_counter()
    context_encoder = None
    if opts.train_context_encoder:
        from rayrag.reindex.setup import load_context_encoder

        context_encoder = load_context_encoder(job)
    module = RagFineTuner(opts, loaded, val_ex, retrieval_spec=spec, train_examples=train_ex,
                          collate=_collator(opts, loaded), context_encoder=context_encoder)
    trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None)
    if opts.save_every_n_steps > 0 and any(isinstance(cb, ModelCheckpoint) for cb in trainer.checkpoint_callbacks):
        trainer.save_checkpoint(out / "checkpoints" / "last.ckpt")  # the final state too, not only every N steps
    if earlier_log and trainer.is_global_zero:
        _prepend_log(out, earlier_log, before_step=module.resumed_step)
    metrics = {"train_seconds": time.perf_counter() - t0, "train_steps": int(trainer.global_step)}
    if opts.profile:
        _write_profile(trainer, module, out)
    return Fitted(module, trainer, metrics)


def export(job: Job, fitted: Fitted) -> dict:
    """Rank 0, after `fit`: load the best validation checkpoint into the module and write it as `job.best_dir`, a
    Hugging Face directory that records its knowledge base; returns the training metrics with best_val_em.
    With --train_context_encoder the knowledge base is first re-embedded by the best context encoder into
    OUTPUT_DIR/kb, which the model records, carries the encoder in best_model/context_encoder/, and `job.kb`
    becomes (so --do_predict answers from it)."""
    metrics = dict(fitted.metrics)
    callback = fitted.trainer.checkpoint_callback
    best = callback.best_model_path if callback is not None else ""
    module = fitted.module
    if best and Path(best).is_file():
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
        metrics["best_val_em"] = float(callback.best_model_score or 0.0)
    info, context_encoder = job.info, module.context_encoder
    if context_encoder is not None:
        from rayrag.reindex.setup import final_knowledge_base

        job.kb = final_knowledge_base(job, context_encoder)
        info = dataclasses.replace(info, context_encoder=CONTEXT_DIR)
    info = record_kb(module.model, info, job.kb) if job.kb is not None else info
    save_model(job.best_dir, module.model, module.loaded.question_tokenizer, module.loaded.generator_tokenizer, info,
               context_encoder=context_encoder)
    log.info("best model written to %s", job.best_dir)
    return metrics


def _check_model(opts: TrainOptions, info: ModelInfo) -> ModelInfo:
    """The model to train: --model_type picks the RAG class (`with_type`); refuse flags that contradict it."""
    info = with_type(info, opts.model_type, str(opts.model_name_or_path))
    if opts.question_encoder_lr is not None and not info.is_rag:
        raise RayragError(f"--question_encoder_lr: {opts.model_name_or_path} is a closed-book {info.model_type} "
                          "model with no question encoder; drop the flag")
    return info


def _validation_examples(opts: TrainOptions, train_ex: list) -> list:
    if has_split(opts.data_dir, "val"):
        return load_split(opts.data_dir, "val", opts.n_val)
    n = 64 if opts.n_val < 0 else opts.n_val
    log.warning("%s has no val split (val.source/val.target or val.jsonl): validating on the first %d training "
                "examples, so val_em measures memorisation; add a val split for an honest score", opts.data_dir, n)
    return train_ex[:n]


def predict_test(job: Job) -> dict:
    """Answer the test split with the best model (`job.best_dir`, else the model trained from), loaded as
    `job.info` says (the class --model_type picked); write the predictions; return test_* metrics."""
    opts = job.opts
    model_dir = job.best_dir if job.best_dir.is_dir() else Path(opts.model_name_or_path)
    loaded = load_model(model_dir, kb=job.kb or opts.kb.location(), info=job.info)
    test_ex = load_split(opts.data_dir, "test", opts.n_test)
    preds = predict(loaded, [e.question for e in test_ex], batch_size=opts.eval_batch_size,
                    num_beams=opts.eval_beams, max_length=opts.test_max_target_length,
                    n_docs=opts.eval_n_docs or opts.n_docs,
                    max_source_length=opts.max_source_length, progress=opts.progress)
    write_predictions(job.out, preds, test_ex)
    return {f"test_{k}": v for k, v in score(preds, test_ex).items()}


def _read_log(out: Path) -> list[dict]:
    path = out / "logs" / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _prepend_log(out: Path, earlier: list[dict], before_step: int | None = None) -> None:
    """Put the rows logged before a resume back in front of the resumed run's rows. Rows of steps at or past
    `before_step` (the resumed checkpoint's step) are dropped: the run after the checkpoint redid those steps."""
    if before_step is not None:
        earlier = [r for r in earlier if not str(r.get("step", "")).isdigit() or int(r["step"]) < before_step]
    later = _read_log(out)
    fields = list(dict.fromkeys([k for row in earlier + later for k in row]))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(earlier + later)
    atomic_write_text(out / "logs" / "metrics.csv", text.getvalue())


def _collator(opts: TrainOptions, loaded) -> Collator:
    cfg = loaded.model.config
    start = cfg.decoder_start_token_id if loaded.info.is_rag else getattr(cfg, "decoder_start_token_id", None)
    if start is None and not loaded.info.is_rag and hasattr(cfg, "decoder"):
        start = cfg.decoder_start_token_id
    return Collator(loaded.question_tokenizer, loaded.generator_tokenizer, is_rag=loaded.info.is_rag,
                    decoder_start_token_id=start if start is not None else -1,
                    max_source_length=opts.max_source_length, max_target_length=opts.max_target_length)


def _write_profile(trainer: L.Trainer, module: RagFineTuner, out: Path) -> None:
    """Gather every rank's retrieval calls and write retrieval_profile.json on rank 0: per rank the call
    count and times (`seconds`, every call in order), `retries` (calls re-sent to another actor) and
    `ids_sha1` (one fingerprint of the retrieved ids per call; see `RayragRetriever`), `generations` (the index
    generation of each call); `reindex`, every re-index of --train_context_encoder; and `critical`, the
    calls' critical path: for each call index, the longest call of any rank (DDP ranks retrieve in lockstep,
    and a step waits for its slowest rank)."""
    import numpy as np

    retriever = module.model.retriever if module.is_rag else None
    mine = {"times": list(retriever.call_seconds) if retriever else [],
            "ids_sha1": list(retriever.call_ids_sha1) if retriever else [],
            "retries": int(retriever.client.retries) if retriever else 0,
            "generations": list(retriever.call_generations) if retriever else []}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, mine)
    else:
        gathered = [mine]
    if not trainer.is_global_zero:
        return
    per_rank = {str(rank): {**_time_stats(got["times"]), "seconds": got["times"], "retries": got["retries"],
                            "ids_sha1": got["ids_sha1"], "generations": got["generations"]}
                for rank, got in enumerate(gathered)}
    calls = min(len(got["times"]) for got in gathered)
    critical = np.max([got["times"][:calls] for got in gathered], axis=0) if calls else np.zeros(0)
    profile = {"backend": module.opts.retrieval.backend, "critical": _time_stats(critical),
               "ranks": per_rank}
    history = out / "index" / "history.json"
    if module.opts.train_context_encoder and history.is_file():  # each re-index: steps, seconds, wait, outcome
        profile["reindex"] = json.loads(history.read_text(encoding="utf-8"))
    atomic_write_text(out / "retrieval_profile.json", json.dumps(profile, indent=2) + "\n")
    for rank, s in per_rank.items():
        if s["count"]:
            log.info("retrieval profile rank %s: %d calls, mean %.4f s, p50 %.4f s, p90 %.4f s, max %.4f s",
                     rank, s["count"], s["mean_s"], s["p50_s"], s["p90_s"], s["max_s"])


def _time_stats(seconds) -> dict:
    """count, mean_s, p50_s, p90_s, max_s of call times (count 0 alone when there are none)."""
    import numpy as np

    a = np.asarray(seconds, dtype=np.float64)
    if not a.size:
        return {"count": 0}
    return {"count": int(a.size), "mean_s": float(a.mean()), "p50_s": float(np.percentile(a, 50)),
            "p90_s": float(np.percentile(a, 90)), "max_s": float(a.max()), "total_s": float(a.sum())}
