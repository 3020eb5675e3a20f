"""Encoders: loading DPR question and context encoders (`load`), how they pool their token vectors (`pooling`), and
the mean-pooling question encoder that model directories carry for plain transformers (`mean_pooling_dpr`).

Importing this package registers the mean-pooling question encoder with transformers' Auto classes.
"""

from rayrag.encoders import pooling
from rayrag.encoders.load import (MINILM, default_pooling, embed_passages, load_context_encoder,
                                  load_question_encoder, output_dim, resolve)

__all__ = ["MINILM", "default_pooling", "embed_passages", "load_context_encoder", "load_question_encoder",
           "output_dim", "pooling", "resolve"]
