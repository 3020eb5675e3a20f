"""The LightningModule: a RAG model (or closed-book seq2seq) with its loss, validation EM/F1 and optimizer."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from rayrag.data.qa import QAExample
from rayrag.evaluate.metrics import exact_match, f1_score
from rayrag.model.checkpoint import LoadedModel
from rayrag.model.decode import decode_answers
from rayrag.train.batches import QADataset
from rayrag.train.loader import EpochBatchSampler, ResumableLoader
from rayrag.train.options import TrainOptions

log = logging.getLogger(__name__)

_SCHEDULERS = {"linear": "linear", "cosine": "cosine", "cosine_w_restarts": "cosine_with_restarts",
               "polynomial": "polynomial", "constant": "constant_with_warmup"}


class RagFineTuner(L.LightningModule):
    """Fine-tunes `loaded.model`. A RAG model gets its retrieval client in `setup`, inside each training
    process after the process group exists, from the spec of the service the job's first process opened
    (`retrieval_spec`, JSON; the other ranks receive it from rank 0)."""

    def __init__(self, opts: TrainOptions, loaded: LoadedModel, val_examples: list[QAExample],
                 retrieval_spec: str | None = None, train_examples: list[QAExample] | None = None, collate=None,
                 context_encoder=None):
        super().__init__()
        self.train_examples = train_examples or []
        self.collate = collate
        self.opts = opts
        self.loaded = loaded
        self.model = loaded.model.train()  # from_pretrained returns eval mode; Lightning keeps modes as found
        self.is_rag = loaded.info.is_rag
        self.val_examples = val_examples
        self.retrieval_spec = retrieval_spec
        self.client = None
        self.resumed_step: int | None = None
        self.n_docs = opts.n_docs or (self.model.config.n_docs if self.is_rag else None)
        self.eval_n_docs = opts.eval_n_docs or self.n_docs  # validation answers read this many passages
        self.save_hyperparameters({k: str(v) for k, v in asdict(opts).items()})
        self._val_sums = torch.zeros(3, dtype=torch.float64)
        if self.is_rag:
            self.model.config.label_smoothing = opts.label_smoothing
            if opts.max_combined_length:  # read by the retriever attached in `setup`, saved with the model
                self.model.config.max_combined_length = opts.max_combined_length
        if context_encoder is not None:  # end to end: the step re-encodes the retrieved passages with it
            self.model.set_context_encoder_for_training(context_encoder.train())
        self._apply_dropout()
        if opts.freeze_embeddings:
            self._freeze_embeddings()

    @property
    def context_encoder(self):
        """The `encoders.context.ContextEncoder` that trains with the model (--train_context_encoder), else None.
        It is part of the model (`model.rag.ctx_encoder`), so checkpoints hold its weights."""
        return getattr(self.model.rag, "ctx_encoder", None) if self.is_rag else None

    # ----- set-up ---------------------------------------------------------------------------
    def _apply_dropout(self) -> None:
        gen = self.model.generator if self.is_rag else self.model
        for module in gen.modules():
            if isinstance(module, torch.nn.Dropout) and self.opts.dropout is not None:
                module.p = self.opts.dropout
        cfg = gen.config
        if self.opts.attention_dropout is not None:
            for name in ("attention_dropout", "attention_probs_dropout_prob"):
                if hasattr(cfg, name):
                    setattr(cfg, name, self.opts.attention_dropout)

    def _freeze_embeddings(self) -> None:
        parts = [self.model.question_encoder, self.model.generator] if self.is_rag else [self.model]
        for part in parts:
            for sub in (part, getattr(part, "decoder", None)):
                if sub is not None and sub.get_input_embeddings() is not None:
                    sub.get_input_embeddings().weight.requires_grad_(False)

    def setup(self, stage: str) -> None:
        if self.is_rag and self.client is None:
            from rayrag.distributed import broadcast_from_first
            from rayrag.model.checkpoint import attach_retriever
            from rayrag.retrieval.service import load_spec

            spec = broadcast_from_first(self.retrieval_spec)  # ranks not started by rank 0 have none
            if spec is None:
                raise RuntimeError("RagFineTuner: no retrieval spec; the job's first process opens the service")
            self.client = load_spec(spec).connect()
            attach_retriever(self.model, self.loaded.question_tokenizer, self.loaded.generator_tokenizer,
                             self.client, where=str(self.opts.model_name_or_path))
            if self.context_encoder is not None:  # the retrieved passages, tokenised as the index embedded them
                self.model.retriever.set_ctx_encoder_tokenizer(self.context_encoder.passage_tokenizer())
            self.client.check_k(self.n_docs)
            if self.eval_n_docs != self.n_docs:
                self.client.check_k(self.eval_n_docs, "--eval_n_docs")

    def teardown(self, stage: str) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    # ----- data ---------------------------------------------------------------------------
    def train_dataloader(self):
        """This rank's share of the training split, in an order that a resumed run repeats exactly."""
        sampler = EpochBatchSampler(len(self.train_examples), self.opts.train_batch_size, seed=self.opts.seed,
                                    rank=self.global_rank, world=self.trainer.world_size)
        # Each loader has a generator of its own: making an iterator draws a seed from it, which would
        # otherwise come from the global RNG that dropout uses, and a resumed run makes its first iterator
        # at another point than the run it resumes.
        return ResumableLoader(QADataset(self.train_examples), sampler, collate_fn=self.collate,
                               num_workers=self.opts.num_workers,
                               generator=torch.Generator().manual_seed(self.opts.seed))

    def val_dataloader(self):
        sampler = EpochBatchSampler(len(self.val_examples), self.opts.eval_batch_size, seed=0, shuffle=False,
                                    rank=self.global_rank, world=self.trainer.world_size)
        return torch.utils.data.DataLoader(QADataset(self.val_examples), batch_sampler=sampler,
                                           collate_fn=self.collate, num_workers=self.opts.num_workers,
                                           generator=torch.Generator().manual_seed(self.opts.seed))

    # ----- exact resume ---------------------------------------------------------------------------
    def _train_sampler(self) -> EpochBatchSampler | None:
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        return sampler if isinstance(sampler, EpochBatchSampler) else None

    def on_train_epoch_start(self) -> None:
        # Lightning sets the epoch of `loader.sampler` and `loader.batch_sampler.sampler`, never of a batch
        # sampler: without this every epoch would repeat the first one's order. (Not called when a run
        # restarts mid-epoch; the loader's restored state has the epoch then.)
        sampler = self._train_sampler()
        if sampler is not None:
            sampler.set_epoch(self.current_epoch)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # count the batches this epoch has trained on: the loader's state in a checkpoint (see loader.py)
        sampler = self._train_sampler()
        if sampler is not None:
            sampler.done += 1

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Dropout (the question encoder's, and the generator's unless --dropout 0) draws from these generators:
        # restoring them makes a resumed run identical. Each process has its own: ranks pad their batches to
        # different lengths and so draw different amounts. Lightning builds the checkpoint on every rank and
        # rank 0 writes it, so every rank's state is gathered into it; a rank restoring rank 0's instead would
        # draw other dropout masks than the uninterrupted run (losses up to 3e-4 relative off after a restart).
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
                 "python": random.getstate()}
        checkpoint["rayrag_rng"] = state
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
            checkpoint["rayrag_rng_by_rank"] = states

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.resumed_step = int(checkpoint.get("global_step", 0))  # steps logged from here on were redone
        by_rank = checkpoint.get("rayrag_rng_by_rank")
        try:
            world = self.trainer.world_size
        except RuntimeError:  # loaded outside a Trainer
            world = 1
        if by_rank and len(by_rank) == world:
            rng = by_rank[self.global_rank]
        else:  # one process, or a run resumed with another number of processes: rank 0's state for all
            rng = checkpoint.get("rayrag_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            name, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
            random.setstate(rng["python"])

    # ----- training ---------------------------------------------------------------------------
    def forward_loss(self, batch: dict) -> torch.Tensor:
        """Mean per-question negative log-likelihood of the answer (marginalised over passages for RAG)."""
        if self.is_rag:
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             labels=batch["labels"], reduce_loss=False, n_docs=self.n_docs, use_cache=False)
            return out.loss.mean()
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"], use_cache=False)
        if self.opts.label_smoothing > 0:
            logits = out.logits
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["labels"].reshape(-1),
                                   ignore_index=-100, label_smoothing=self.opts.label_smoothing)
        return out.loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.forward_loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=batch["input_ids"].size(0))
        return loss

    # ----- validation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_length: int) -> list[str]:
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, num_beams=self.opts.eval_beams,
                      max_length=max_length)
        if self.is_rag:
            kwargs["n_docs"] = self.eval_n_docs
        out = self.model.generate(**kwargs)
        return decode_answers(self.loaded.generator_tokenizer, out)

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(3, dtype=torch.float64)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        preds = self.generate(batch["input_ids"], batch["attention_mask"], self.opts.val_max_target_length)
        for p, i in zip(preds, batch["index"].tolist()):
            gold = self.val_examples[i].answers
            self._val_sums += torch.tensor([exact_match(p, gold), f1_score(p, gold), 1.0], dtype=torch.float64)

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums.to(self.device), reduce_op="sum")
        n = max(1.0, float(sums[2]))
        self.log("val_em", float(sums[0]) / n, prog_bar=True, sync_dist=False, rank_zero_only=False)
        self.log("val_f1", float(sums[1]) / n, prog_bar=False, sync_dist=False, rank_zero_only=False)

    # ----- optimisation ---------------------------------------------------------------------------
    def _stepping_batches(self) -> int:
        """Optimizer steps of the whole run, as `trainer.estimated_stepping_batches` counts them, computed
        without it: it would make the training loader and its first iterator before a resumed run restores
        the loader's state, and the resumed epoch would start again from its first batch (loader.py)."""
        t = self.trainer
        batches = len(EpochBatchSampler(len(self.train_examples), self.opts.train_batch_size, seed=self.opts.seed,
                                        rank=self.global_rank, world=t.world_size))
        total = math.ceil(batches / t.accumulate_grad_batches) * max(t.max_epochs or 1, 1)
        return min(total, t.max_steps) if t.max_steps != -1 else total

    def configure_optimizers(self):
        from transformers import get_scheduler

        # (weight decay, learning rate) -> parameters; the question and context encoders may have rates of their own
        lr = self.opts.learning_rate
        q_lr = lr if self.opts.question_encoder_lr is None else self.opts.question_encoder_lr
        c_lr = lr if self.opts.context_encoder_lr is None else self.opts.context_encoder_lr
        rates = {id(p): q_lr for p in self.model.question_encoder.parameters()} if self.is_rag else {}
        if self.context_encoder is not None:
            rates.update({id(p): c_lr for p in self.context_encoder.parameters()})
        groups: dict[tuple[float, float], list] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            wd = 0.0 if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else self.opts.weight_decay
            groups.setdefault((wd, rates.get(id(p), lr)), []).append(p)
        groups = [{"params": ps, "weight_decay": wd, "lr": g_lr} for (wd, g_lr), ps in groups.items()]
        optimizer = torch.optim.AdamW(groups, lr=self.opts.learning_rate, eps=self.opts.adam_epsilon)
        total = self._stepping_batches()
        name = _SCHEDULERS[self.opts.lr_scheduler]
        kwargs = {"num_cycles": 2} if name == "cosine_with_restarts" else {}
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=self.opts.warmup_steps,
                                  num_training_steps=max(total, 1), scheduler_specific_kwargs=kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
