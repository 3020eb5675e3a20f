"""Assemble a RAG checkpoint from a question encoder and a generator, tied to a knowledge base.

The question encoder defaults to the encoder the knowledge base was built with, so questions
and passages land in the same vector space. Generators: `minilm` (an encoder-decoder
warm-started from the packaged MiniLM), `bert2bert:PATH`, `tiny-bart`, `tiny-t5`, or a hub
name / local path of a seq2seq model. --model_type bart|t5|seq2seq writes the generator alone,
a closed-book baseline.

Example:
  rayrag init-model --kb kb/ --out model-init/ --model_type rag_token --n_docs 5
"""

from __future__ import annotations

from rayrag.cli.aliases import negations, part_spellings
from rayrag.model.options import InitOptions

HELP = "assemble a RAG model (or a closed-book baseline) from parts"
OPTIONS = InitOptions
ALIASES = {**part_spellings(InitOptions), **negations(InitOptions)}  # --kb, --passages_path; --no-overwrite


def run(opts: InitOptions, quiet: bool) -> int:
    from rayrag.model.assemble import init_model

    out = init_model(opts)
    print(f"model written to {out}")
    return 0
