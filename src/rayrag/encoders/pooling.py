"""How an encoder turns its token vectors into one vector: `cls` (the first token, as DPR) or `mean` (the mean of
the tokens under the attention mask, L2-normalised: what the Pooling and Normalize modules of sentence-transformers
models such as the packaged MiniLM compute, the vectors they were trained to compare).

Mean vectors must be normalised to be searched by inner product: measured on the real-text task (scripts/realtext.py,
MiniLM, 1,200 questions), recall@5 was 0.184 with raw mean vectors (a short passage's mean vector is longer, so short
passages win), 0.721 normalised, 0.513 with the first token. A `mean` question encoder multiplies its unit vector by
`score_scale` (20, the default scale of the contrastive loss that sentence-transformers models such as MiniLM are
trained with), so that RAG's passage scores (inner products) spread over about [-20, 20], not over [-1, 1], where
RAG's softmax over them would be nearly flat; the ranking is the same.

The knowledge base's manifest and the RAG model's question encoder both record the pooling, and a model is only
used with a knowledge base of the same pooling (`check`).

A `cls` question encoder is transformers' own `DPRQuestionEncoder`, so its model directory loads with plain
transformers. A `mean` question encoder is `MeanPoolingQuestionEncoder` (`mean_pooling_dpr`, a file that imports only
torch and transformers): the same class and weights with the pooling changed, registered with transformers' Auto
classes under the config type `rayrag_dpr_mean` when `rayrag.encoders` is imported. `save_model` copies that file into
the model directory and names it in `config.json`'s `auto_map`, so plain transformers loads the directory after
`AutoConfig.from_pretrained(DIR, trust_remote_code=True)`; without it transformers refuses the unknown config type
instead of silently pooling the other way.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import DPRConfig

from rayrag.encoders.mean_pooling_dpr import (DEFAULT_SCORE_SCALE, MEAN_MODEL_TYPE, MeanPoolingDPRConfig,
                                              MeanPoolingQuestionEncoder, mean_pool)
from rayrag.errors import RayragError

__all__ = ["AUTO", "DEFAULT_SCORE_SCALE", "MEAN_MODEL_TYPE", "POOLINGS", "MeanPoolingDPRConfig",
           "MeanPoolingQuestionEncoder", "check", "detect", "mean_pool", "of_question_encoder", "pool",
           "question_encoder_config", "resolve"]

POOLINGS = ("cls", "mean")
AUTO = "auto"


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per sequence (B, d) from token vectors (B, S, d): the first token (`cls`) or the L2-normalised mean
    (`mean`)."""
    if pooling == "mean":
        return torch.nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)
    return hidden[:, 0]


def of_question_encoder(config) -> str:
    """The pooling of a question encoder with this config (a RAG model's `config.question_encoder`)."""
    return "mean" if getattr(config, "model_type", None) == MEAN_MODEL_TYPE else "cls"


def question_encoder_config(config: DPRConfig, pooling: str) -> DPRConfig:
    """`config` as the config of a question encoder that pools by `pooling`."""
    cls = MeanPoolingDPRConfig if pooling == "mean" else DPRConfig
    if type(config) is cls:
        return config
    data = config.to_dict()
    data.pop("model_type", None)
    if pooling == "mean":
        data.setdefault("score_scale", DEFAULT_SCORE_SCALE)
    else:
        data.pop("score_scale", None)
    return cls(**data)


def detect(path: str | Path | None) -> str:
    """The pooling an encoder checkpoint was trained with: what its config.json records (`rayrag_pooling`, in a context
    encoder `rayrag train --train_context_encoder` wrote), else what a sentence-transformers directory's pooling module
    says (`1_Pooling/config.json`: mean tokens -> `mean`, CLS token -> `cls`), else `cls` (DPR's, and the default
    for any other BERT-style checkpoint). Hub names without a local directory are `cls`."""
    if path is None:
        return "cls"
    root = Path(path)
    try:  # a context encoder rayrag saved (`encoders.context.ContextEncoder.save`) records its pooling
        recorded = json.loads((root / "config.json").read_text(encoding="utf-8")).get("rayrag_pooling")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded in POOLINGS:
        return recorded
    modules = root / "modules.json"
    if not modules.is_file():
        return "cls"
    try:
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if str(module.get("type", "")).endswith("Pooling"):
                cfg = json.loads((root / module.get("path", "") / "config.json").read_text(encoding="utf-8"))
                if cfg.get("pooling_mode_mean_tokens"):
                    return "mean"
                if cfg.get("pooling_mode_cls_token"):
                    return "cls"
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise RayragError(f"{modules}: cannot read the encoder's pooling ({e}); pass --pooling cls or mean") from e
    return "cls"


def resolve(pooling: str | None, path: str | Path | None, flag: str = "--pooling") -> str:
    """`pooling` checked, with `auto`/None replaced by what the checkpoint at `path` was trained with (`detect`)."""
    if pooling in (None, AUTO):
        return detect(path)
    if pooling not in POOLINGS:
        raise RayragError(f"{flag} {pooling!r}: choose {AUTO}, {' or '.join(POOLINGS)}")
    return pooling


def check(model_pooling: str, kb_pooling: str, model: str, kb: str) -> None:
    """Refuse a model whose question encoder pools differently from the knowledge base's context encoder."""
    if model_pooling != kb_pooling:
        raise RayragError(
            f"{model}: its question encoder pools by {model_pooling} but the knowledge base {kb} was embedded with "
            f"{kb_pooling} pooling; rebuild the knowledge base with `rayrag index --pooling {model_pooling}`, or make "
            f"the model with `rayrag init-model --kb {kb}` (it takes the knowledge base's pooling)")
