"""The context encoder as a training step runs it: passages tokenised, encoded and pooled exactly as `rayrag index`
embeds them, so that a passage's vector in the step equals the one a re-index with the same weights stores.

transformers' RAG classes train the context encoder when given one (`set_context_encoder_for_training`): the
retriever then tokenises the retrieved passages with its `ctx_encoder_tokenizer` and the model calls
`ctx_encoder(input_ids, attention_mask=...).pooler_output` to score them. Two things differ from `rayrag index`
there, and the classes below put them right:

- the retriever asks the tokenizer for `truncation=True` at the tokenizer's own length (cutting title or text,
  whichever is longer); `PassageTokenizer` cuts the text at the index's length (`truncation="only_second"`);
- the model passes no token types, where BERT's pair encoding marks the text as segment 1; `ContextEncoder` puts them
  back from the input ids (`pair_token_types`) and pools as the knowledge base was pooled (`passage_vectors`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from rayrag.encoders.mean_pooling_dpr import mean_pool

POOLING_KEY = "rayrag_pooling"
"""The key a saved context encoder's config.json records its pooling under (`pooling.detect` reads it)."""

MAX_LENGTH = 256
"""Tokens of a passage (title and text) as `rayrag index` embeds it by default."""


def pair_token_types(input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_token_id: int) -> torch.Tensor:
    """BERT's token types of (title, text) pairs from their ids alone: 0 up to and including the first [SEP], 1 after
    it (the text and its [SEP]), 0 on padding: what the tokenizer returns for the pair."""
    sep = (input_ids == sep_token_id).long()
    after_first = (torch.cumsum(sep, dim=1) - sep) >= 1
    return (after_first & attention_mask.bool()).long()


def passage_vectors(encoder, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """The vectors (B, d) a knowledge base stores for passages encoded as these (title, text) pairs, by the DPR
    context encoder `encoder`: `cls` its pooler output (the first token, projected if it projects), `mean` the mean of
    the tokens under the mask, projected, L2-normalised (as sentence-transformers computes it)."""
    if pooling == "mean":
        inner = encoder.ctx_encoder
        hidden = inner.bert_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                  return_dict=True).last_hidden_state
        vectors = mean_pool(hidden, attention_mask)
        if inner.projection_dim > 0:
            vectors = inner.encode_proj(vectors)
        return torch.nn.functional.normalize(vectors, dim=-1)
    return encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).pooler_output


class PassageTokenizer:
    """The `ctx_encoder_tokenizer` of a `RagRetriever` while the context encoder trains: `tokenizer` on (titles, texts)
    with the truncation and length `rayrag index` uses, whatever truncation the retriever asks for."""

    def __init__(self, tokenizer, max_length: int = MAX_LENGTH):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, titles, texts, *, truncation=None, padding="longest", return_tensors=None, **kwargs):
        return self.tokenizer(list(titles), list(texts), truncation="only_second", max_length=self.max_length,
                              padding=padding, return_tensors=return_tensors)


class ContextEncoder(torch.nn.Module):
    """A DPR context encoder (`encoder`, its weights under `encoder.`) that pools by `pooling` and restores the token
    types the RAG classes leave out: `forward(input_ids, attention_mask)` returns the passage vectors as
    `pooler_output`, the same as `rayrag index` computes for those passages with these weights."""

    def __init__(self, encoder, tokenizer, pooling: str, max_length: int = MAX_LENGTH):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, return_dict: bool = True) -> BaseModelOutputWithPooling:
        if attention_mask is None:
            attention_mask = (input_ids != self.tokenizer.pad_token_id).long()
        if token_type_ids is None:
            token_type_ids = pair_token_types(input_ids, attention_mask, self.tokenizer.sep_token_id)
        vectors = passage_vectors(self.encoder, input_ids, attention_mask, token_type_ids, self.pooling)
        return BaseModelOutputWithPooling(pooler_output=vectors)

    def passage_tokenizer(self) -> PassageTokenizer:
        return PassageTokenizer(self.tokenizer, self.max_length)

    def save(self, out: str | Path) -> Path:
        """Write the encoder as a Hugging Face DPR context-encoder directory (weights, config, tokenizer) whose
        config.json records the pooling: `rayrag index --encoder OUT` embeds as this encoder does."""
        out = Path(out)
        if out.exists():
            shutil.rmtree(out)
        self.encoder.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        config = out / "config.json"
        data = json.loads(config.read_text(encoding="utf-8"))
        data[POOLING_KEY] = self.pooling
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return out

    def copy_for_snapshot(self) -> ContextEncoder:
        """A copy of the weights as they are now, on the CPU, in eval mode (what a re-index embeds with)."""
        import copy

        encoder = copy.deepcopy(self.encoder).to("cpu").eval()
        return ContextEncoder(encoder, self.tokenizer, self.pooling, self.max_length)

