"""`rayrag train`: build the Lightning Trainer, fit, export the best model, predict the test split."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rayrag.data.qa import has_split, load_split
from rayrag.distributed import barrier, is_first_process
from rayrag.errors import RayragError
from rayrag.evaluate.predict import predict, score, write_predictions
from rayrag.atomic import atomic_write_text, atomic_write_with
from rayrag.kb.layout import KbLocation, from_flags
from rayrag.model.checkpoint import (KB_FIX, ModelInfo, check_pooling, load_model, read_info, record_kb, save_model,
                                     with_type)
from rayrag.retrieval.options import RetrievalOptions
from rayrag.retrieval.service import open_service
from rayrag.train.batches import Collator
from rayrag.train.module import RagFineTuner
from rayrag.train.options import TrainOptions

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


def _retrieval_options(opts: TrainOptions, kb: KbLocation) -> RetrievalOptions:
    return RetrievalOptions(kb=Path(kb.kb), index_path=Path(kb.index_path) if kb.index_path else None,
                            backend=opts.distributed_retriever, num_workers=opts.num_retrieval_workers,
                            ray_address=opts.ray_address, pool=opts.pool)


@contextlib.contextmanager
def retrieval_service(opts: TrainOptions, kb: KbLocation | None, spec: str | None = None) -> Iterator[str | None]:
    """Around `trainer.fit`: in the job's first process (before Lightning starts the other ranks) open the
    retrieval service and yield its spec (JSON) for the module; elsewhere, or without retrieval, yield None.
    After a fit that ended well every rank meets at a barrier (each has closed its client by then), then the
    first process closes the service (for `ray`: kills the pool, stops a Ray instance it started).
    `spec`: the spec of a service the caller opened and closes (`rayrag tune`'s driver): yielded as it is."""
    own = kb is not None and spec is None and is_first_process()
    service = open_service(_retrieval_options(opts, kb)) if own else None
    try:
        yield service.spec.to_json() if service is not None else (spec if kb is not None else None)
        if kb is not None:
            barrier()
    finally:
        if service is not None:
            service.close()


@dataclass
class Launched:
    """How the Trainer of a process started by a launcher (a Ray Train worker, `train/ray_launch.py`) joins the job:
    the launcher's strategy and plugins replace Lightning's own DDP set-up, and `prepare` checks the Trainer."""

    strategy: Any
    plugins: list
    prepare: Callable[[L.Trainer], L.Trainer]


def _trainer(opts: TrainOptions, out: Path, extra: Sequence[L.Callback] = (), checkpoints: bool = True,
             launched: Launched | None = None) -> L.Trainer:
    ckpt_dir = out / "checkpoints"
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_em", mode="max",
                                 save_last=opts.save_every_n_steps == 0, save_top_k=1,
                                 enable_version_counter=False)] if checkpoints else []
    if checkpoints and opts.save_every_n_steps > 0:  # last.ckpt every N steps, for --resume after a crash
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True,
                                         every_n_train_steps=opts.save_every_n_steps, enable_version_counter=False))
    callbacks += list(extra)  # after the ModelCheckpoints: a Checkpoint among them sees what they wrote
    if opts.early_stopping_patience >= 0:
        callbacks.append(EarlyStopping(monitor="val_em", mode="max", patience=max(1, opts.early_stopping_patience)))
    accelerator = "gpu" if opts.accelerator == "cuda" else opts.accelerator
    on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    devices, num_nodes, plugins = opts.devices, opts.num_nodes, [AtomicCheckpointIO()]
    if launched is not None:  # one device per process; the launcher's environment says who is where
        devices, num_nodes, strategy = 1, 1, launched.strategy
        plugins += list(launched.plugins)
    elif devices > 1 or num_nodes > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="nccl" if on_gpu else "gloo", find_unused_parameters=True)
    else:
        strategy = "auto"
    precision = ("16-mixed" if on_gpu else "bf16-mixed") if opts.fp16 else "32-true"
    vci = opts.val_check_interval
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
        precision=precision, max_epochs=opts.num_train_epochs, max_steps=opts.max_steps,
        max_time={"minutes": opts.max_time_minutes} if opts.max_time_minutes > 0 else None,
        accumulate_grad_batches=opts.gradient_accumulation_steps,
        gradient_clip_val=opts.max_grad_norm or None, callbacks=callbacks,
        logger=[CSVLogger(out, name="logs", version=""), TensorBoardLogger(out, name="tensorboard", version="")],
        val_check_interval=int(vci) if vci > 1 else vci, num_sanity_val_steps=0,
        check_val_every_n_epoch=None if vci > 1 else 1,  # N > 1: every N steps, across epochs
        log_every_n_steps=opts.log_every_n_steps, enable_progress_bar=opts.progress,
        enable_model_summary=opts.progress, enable_checkpointing=checkpoints,
        plugins=plugins, deterministic=False, default_root_dir=out,
        use_distributed_sampler=False)
    return launched.prepare(trainer) if launched is not None else trainer


def train(opts: TrainOptions, *, spec: str | None = None, callbacks: Sequence[L.Callback] = (),
          ckpt_path: Path | None = None, checkpoints: bool = True, launched: Launched | None = None,
          fit_elsewhere: Callable[[TrainOptions, KbLocation | None], dict] | None = None) -> dict:
    """Run `rayrag train`; returns the metrics written to metrics.json (rank 0) or {}.

    For a driver that owns the retrieval service and the checkpoints (a `rayrag tune` trial): `spec` is the JSON
    spec of a service opened elsewhere (attached to, never closed here); `callbacks` join the Trainer's;
    `ckpt_path` is a Lightning checkpoint to continue from; `checkpoints=False` writes no checkpoints/ and no
    best_model/ (the caller keeps its own). For --launcher ray (`train/ray_launch.py`): in the driver
    `fit_elsewhere(opts, kb)` trains (in Ray Train's workers) and returns the training metrics, and prediction runs
    here; each worker calls this with `launched`, how its Trainer joins the job."""
    from rayrag.config import write_config

    opts.validate()
    opts = opts.resolved()
    out = Path(opts.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if opts.launcher == "ray" and launched is None and fit_elsewhere is None:
        raise RayragError("--launcher ray: train with rayrag.train.ray_launch.train_on_ray (as `rayrag train` does)")
    if is_first_process() and launched is None:  # `rayrag train --config OUTPUT_DIR/config.yaml` reruns this run
        write_config(opts, out)
    info = _check_model(opts, read_info(Path(opts.model_name_or_path)))
    kb = from_flags(opts.kb, opts.passages_path, opts.index_path) or info.location
    if info.is_rag and kb is None:
        raise RayragError(f"{opts.model_name_or_path}: no knowledge base recorded; {KB_FIX}")
    L.seed_everything(opts.seed, workers=True, verbose=False)
    metrics: dict = {}
    best_dir = out / "best_model"
    if opts.do_train and fit_elsewhere is not None:
        metrics = fit_elsewhere(opts, kb if info.is_rag else None)
    elif opts.do_train:
        metrics, first = _fit(opts, info, kb if info.is_rag else None, out, best_dir, spec=spec,
                              callbacks=callbacks, ckpt_path=ckpt_path, checkpoints=checkpoints, launched=launched)
        if not first:
            return {}
    if opts.do_predict:
        metrics.update(_predict_test(opts, best_dir if best_dir.is_dir() else Path(opts.model_name_or_path),
                                     kb, out, info))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
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


def _fit(opts: TrainOptions, info: ModelInfo, kb: KbLocation | None, out: Path, best_dir: Path, *,
         spec: str | None = None, callbacks: Sequence[L.Callback] = (), ckpt_path: Path | None = None,
         checkpoints: bool = True, launched: Launched | None = None) -> tuple[dict, bool]:
    """Train; on the first rank export the best model (with `checkpoints`). Returns (metrics, whether this is
    global rank 0). See `train` for `spec`, `callbacks`, `ckpt_path`."""
    train_ex = load_split(opts.data_dir, "train", opts.n_train)
    val_ex = _validation_examples(opts, train_ex)
    loaded = load_model(opts.model_name_or_path, retrieval=False, info=info)
    if kb is not None:  # questions pooled as the knowledge base's passages were
        check_pooling(loaded.model, kb, str(opts.model_name_or_path))
    continuing = opts.resume or ckpt_path is not None
    earlier_log = _read_log(out) if continuing else []  # Lightning's CSVLogger starts a new file
    trainer = _trainer(opts, out, callbacks, checkpoints, launched)
    t0 = time.perf_counter()
    ckpt = ckpt_path or (out / "checkpoints" / "last.ckpt" if opts.resume else None)
    with retrieval_service(opts, kb, spec) as spec:
        module = RagFineTuner(opts, loaded, val_ex, retrieval_spec=spec, train_examples=train_ex,
                              collate=_collator(opts, loaded))
        trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None)
        if checkpoints and opts.save_every_n_steps > 0:  # the final state too, not only every N steps
            trainer.save_checkpoint(out / "checkpoints" / "last.ckpt")
    if earlier_log and trainer.is_global_zero:
        _prepend_log(out, earlier_log, before_step=module.resumed_step)
    metrics = {"train_seconds": time.perf_counter() - t0, "train_steps": int(trainer.global_step)}
    if opts.profile:
        _write_profile(trainer, module, out)
    if not trainer.is_global_zero:
        return {}, False
    if not checkpoints:
        return metrics, True
    best = trainer.checkpoint_callback.best_model_path
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
        metrics["best_val_em"] = float(trainer.checkpoint_callback.best_model_score or 0.0)
    if kb is not None:  # the best model retrieves from the knowledge base it was trained with
        info = record_kb(module.model, info, kb)
    save_model(best_dir, module.model, loaded.question_tokenizer, loaded.generator_tokenizer, info)
    log.info("best model written to %s", best_dir)
    return metrics, True


def _predict_test(opts: TrainOptions, model_dir: Path, kb: KbLocation | None, out: Path,
                  info: ModelInfo) -> dict:
    """Answer the test split with `model_dir` (loaded as `info` says: the class --model_type picked); write the
    predictions; return test_* metrics."""
    loaded = load_model(model_dir, kb=kb, info=info)
    test_ex = load_split(opts.data_dir, "test", opts.n_test)
    preds = predict(loaded, [e.question for e in test_ex], batch_size=opts.eval_batch_size,
                    num_beams=opts.eval_beams, max_length=opts.test_max_target_length,
                    n_docs=opts.eval_n_docs or opts.n_docs,
                    max_source_length=opts.max_source_length, progress=opts.progress)
    write_predictions(out, preds, test_ex)
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
    `ids_sha1` (one fingerprint of the retrieved ids per call; see `RayragRetriever`); and `critical`, the
    calls' critical path: for each call index, the longest call of any rank (DDP ranks retrieve in lockstep,
    and a step waits for its slowest rank)."""
    import numpy as np

    retriever = module.model.retriever if module.is_rag else None
    mine = {"times": list(retriever.call_seconds) if retriever else [],
            "ids_sha1": list(retriever.call_ids_sha1) if retriever else [],
            "retries": int(retriever.client.retries) if retriever else 0}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, mine)
    else:
        gathered = [mine]
    if not trainer.is_global_zero:
        return
    per_rank = {str(rank): {**_time_stats(got["times"]), "seconds": got["times"], "retries": got["retries"],
                            "ids_sha1": got["ids_sha1"]} for rank, got in enumerate(gathered)}
    calls = min(len(got["times"]) for got in gathered)
    critical = np.max([got["times"][:calls] for got in gathered], axis=0) if calls else np.zeros(0)
    profile = {"backend": module.opts.distributed_retriever, "critical": _time_stats(critical),
               "ranks": per_rank}
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
