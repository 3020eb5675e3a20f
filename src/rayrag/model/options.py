"""Options of `rayrag init-model`, and the model types every verb names (`--model_type`)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rayrag.errors import RayragError
from rayrag.kb.args import KbArgs

RagType = Literal["rag_sequence", "rag_token"]
"""The RAG classes: RagSequenceForGeneration and RagTokenForGeneration."""
ClosedBookType = Literal["bart", "t5", "seq2seq"]
"""Closed-book baselines: the generator alone."""
ModelType = Literal[RagType, ClosedBookType]


@dataclass
class InitOptions:
    """Options of `rayrag init-model`."""

    out: Path
    """Where to write the model directory."""
    model_type: ModelType = "rag_token"
    """A RAG model, or a closed-book baseline: bart | t5 | seq2seq (the generator alone)."""
    kb: KbArgs = field(default_factory=KbArgs)
    """The knowledge base the RAG model retrieves from (RAG types need it): --kb, or --passages_path/--index_path."""
    question_encoder: str | None = None
    """Question encoder: hub name, local path or `minilm`; default: the knowledge base's own encoder."""
    pooling: Literal["cls", "mean"] | None = None
    """How the question encoder pools its token vectors: `cls` or `mean`; default (and the only value accepted):
    the knowledge base's (its manifest's `pooling`; `cls` for a Hugging Face RAG knowledge base), so questions and
    passages are pooled alike. A `mean` model directory carries its question encoder's code: plain transformers
    loads it after `AutoConfig.from_pretrained(dir, trust_remote_code=True)` (README)."""
    context_encoder: str | None = None
    """A context encoder for the RAG model to carry in MODEL_DIR/context_encoder/ (`kb`: the knowledge base's own
    encoder; or a hub name, local directory or `minilm`), pooling as the knowledge base: `rayrag train
    --train_context_encoder` trains it end to end (default there: the knowledge base's encoder)."""
    generator: str = "minilm"
    """Generator: `minilm`, `bert2bert:PATH`, `tiny-bart`, `tiny-t5`, or a hub name / path."""
    generator_encoder_layers: int = 0
    """For `minilm`/`bert2bert:` generators: encoder layers to keep, the lowest (0 = all)."""
    generator_decoder_layers: int = 0
    """For `minilm`/`bert2bert:` generators: decoder layers to keep, the lowest (0 = all)."""
    cross_attention_init: Literal["self", "random"] = "self"
    """For `minilm`/`bert2bert:` generators: start each decoder layer's cross-attention as a copy of
    its self-attention (`self`; learns to copy from passages several times sooner) or at random (`random`,
    as `from_encoder_decoder_pretrained` does)."""
    n_docs: int = 5
    """Passages retrieved per question."""
    max_combined_length: int = 300
    """Token length of each passage + question input to the generator."""
    seed: int = 0
    """Seed for randomly initialised parts."""
    overwrite: bool = False
    """Replace `out` if it exists."""

    def validate(self) -> None:
        """Check every flag; raise `RayragError` naming the flag. Changes nothing."""
        if self.model_type in typing.get_args(RagType) and not self.kb.given:
            raise RayragError(f"--model_type {self.model_type} retrieves: pass --kb KB_DIR (or --passages_path P "
                              "--index_path I)")
        self.kb.validate()
        if self.n_docs < 1:
            raise RayragError(f"--n_docs {self.n_docs}: must be at least 1")
        if self.generator_encoder_layers < 0 or self.generator_decoder_layers < 0:
            raise RayragError("--generator_encoder_layers/--generator_decoder_layers: must be 0 (all) or more")
        if self.context_encoder is not None and self.model_type not in typing.get_args(RagType):
            raise RayragError(f"--context_encoder: a closed-book {self.model_type} model retrieves nothing; drop it")
        if self.max_combined_length < 16:
            raise RayragError(f"--max_combined_length {self.max_combined_length}: must be at least 16")

    def resolved(self) -> InitOptions:
        """A new `InitOptions` with the knowledge base's paths made absolute (the model records them)."""
        return dataclasses.replace(self, kb=self.kb.absolute())
