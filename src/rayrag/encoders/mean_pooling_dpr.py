"""A DPR question encoder that pools by the mean of its tokens, for transformers' RAG classes.

This file imports only torch and transformers: rayrag uses it, and `save_model` copies it into every mean-pooled RAG
model directory, whose `config.json` names it in `auto_map`. Plain transformers then opens the directory the way it
opens any model with custom code:

    config = AutoConfig.from_pretrained(DIR, trust_remote_code=True)  # runs this file: registers the encoder
    retriever = RagRetriever.from_pretrained(DIR, config=config)
    model = RagTokenForGeneration.from_pretrained(DIR, config=config, retriever=retriever)

Importing it registers `MeanPoolingDPRConfig` (model type `rayrag_dpr_mean`) and `MeanPoolingQuestionEncoder` with
`AutoConfig`/`AutoModel`, which `RagConfig` (its question encoder's config) and `RagModel` (`AutoModel.from_config`)
look up. `MeanPoolingRagConfig` is `RagConfig` itself, there for `auto_map` to name.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, DPRConfig, DPRQuestionEncoder, RagConfig
from transformers.models.dpr.modeling_dpr import DPRQuestionEncoderOutput

MEAN_MODEL_TYPE = "rayrag_dpr_mean"
DEFAULT_SCORE_SCALE = 20.0


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors `hidden` (B, S, d) over the tokens where `attention_mask` (B, S) is 1 -> (B, d)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class MeanPoolingDPRConfig(DPRConfig):
    """A `DPRConfig` whose encoder pools by the normalised mean of its tokens, times `score_scale` (a config attribute;
    default 20)."""

    model_type = MEAN_MODEL_TYPE


class MeanPoolingQuestionEncoder(DPRQuestionEncoder):
    """`DPRQuestionEncoder` (same weights, same names) whose vector is the L2-normalised mean of the question's token
    vectors under the attention mask, times `config.score_scale`, instead of the first token's; the projection, if the
    config has one, applies before normalising."""

    config_class = MeanPoolingDPRConfig

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if attention_mask is None:
            attention_mask = (torch.ones(inputs_embeds.shape[:-1], device=inputs_embeds.device) if input_ids is None
                              else (input_ids != self.config.pad_token_id))
        encoder = self.question_encoder
        out = encoder.bert_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                 inputs_embeds=inputs_embeds, output_attentions=bool(output_attentions),
                                 output_hidden_states=bool(output_hidden_states), return_dict=True)
        pooled = mean_pool(out.last_hidden_state, attention_mask)
        if encoder.projection_dim > 0:
            pooled = encoder.encode_proj(pooled)
        scale = float(getattr(self.config, "score_scale", DEFAULT_SCORE_SCALE))
        pooled = torch.nn.functional.normalize(pooled, dim=-1) * scale
        if not return_dict:
            return tuple(v for v in (pooled, out.hidden_states, out.attentions) if v is not None)
        return DPRQuestionEncoderOutput(pooler_output=pooled, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


class MeanPoolingRagConfig(RagConfig):
    """`RagConfig` unchanged: the class a mean-pooled RAG directory's `auto_map` names for `AutoConfig`, so that
    `AutoConfig.from_pretrained(DIR, trust_remote_code=True)` imports this file before it reads the config."""


AutoConfig.register(MEAN_MODEL_TYPE, MeanPoolingDPRConfig, exist_ok=True)
AutoModel.register(MeanPoolingDPRConfig, MeanPoolingQuestionEncoder, exist_ok=True)
