"""`rayrag init-model`: assemble a RAG checkpoint (or a closed-book seq2seq baseline) from parts.

Generators:
- `minilm` (default): an encoder-decoder warm-started from the packaged MiniLM on both sides
  (`EncoderDecoderModel.from_encoder_decoder_pretrained`); `bert2bert:PATH` does the same from
  any BERT-style checkpoint.
- `tiny-bart`, `tiny-t5`: random tiny generators sharing the question encoder's tokenizer.
- anything else: a hub name or local directory of a seq2seq model (BART, T5, ...).
"""

from __future__ import annotations

import logging
from pathlib import Path

from rayrag import encoders
from rayrag.errors import RayragError
from rayrag.kb.layout import KbLocation
from rayrag.kb.manifest import Manifest
from rayrag.model.checkpoint import RAG_TYPES, ModelInfo, rag_class, record_kb, save_model
from rayrag.model.options import InitOptions

log = logging.getLogger(__name__)



def kb_encoder(kb: Path, manifest: Manifest) -> str:
    """The encoder a knowledge base was built with; `./x` names a directory inside the knowledge base."""
    enc = manifest.encoder
    return str((Path(kb) / enc).resolve()) if enc.startswith("./") else enc


def recorded_encoder(kb: KbLocation, manifest: Manifest | None = None) -> str | None:
    """The encoder the knowledge base `kb` (whose manifest, if already read, is `manifest`) records, as `kb_encoder`
    names it; None where it records none (a Hugging Face RAG knowledge base)."""
    manifest = manifest or describe_kb(kb)
    return kb_encoder(Path(kb.kb), manifest) if manifest.encoder else None


def describe_kb(kb: KbLocation) -> Manifest:
    """What init-model needs to know of a knowledge base (encoder, vector size, passage count), without its index:
    the manifest of a rayrag directory, or what a Hugging Face RAG knowledge base's passages say (no encoder)."""
    if not kb.is_reference:
        return Manifest.read(Path(kb.kb))
    from rayrag.kb.reference import open_passages

    return open_passages(Path(kb.kb), Path(kb.index_path))[1]


def _fix_special_ids(config, tokenizer) -> dict[str, int]:
    """Set decoder start = bos and eos/pad on `config` (RAG needs them); returns the ids set, for the
    generation config."""
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    ids = {"pad_token_id": tokenizer.pad_token_id,
           "eos_token_id": tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id}
    if start is not None:
        ids.update(decoder_start_token_id=start, bos_token_id=start)
    for k, v in ids.items():
        setattr(config, k, v)
    return ids


def init_cross_attention_from_self(model) -> int:
    """Copy each decoder layer's self-attention weights into its cross-attention; returns the layers set.

    A BERT checkpoint has no cross-attention, so `from_encoder_decoder_pretrained` draws it at random
    and the decoder must learn from nothing how to read the passage. Started from the layer's own
    self-attention, it attends to input tokens like the pretrained layer attends to its own, and its
    output lands in the residual stream at the scale the layer expects."""
    layers = [m for m in model.decoder.modules()
              if getattr(m, "crossattention", None) is not None and getattr(m, "attention", None) is not None]
    for layer in layers:
        layer.crossattention.load_state_dict(layer.attention.state_dict())
    return len(layers)


def build_generator(spec: str, tokenizer_for_tiny, decoder_layers: int = 0, seed: int = 0,
                    encoder_layers: int = 0, cross_attention_init: str = "self"):
    """(generator model, generator tokenizer) for a generator spec."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

    if spec in ("tiny-bart", "tiny-t5"):
        from rayrag.tiny import tiny_generator

        return tiny_generator(spec, tokenizer_for_tiny, seed=seed), tokenizer_for_tiny
    if spec == encoders.MINILM or spec.startswith("bert2bert:"):
        path = encoders.resolve(encoders.MINILM if spec == encoders.MINILM else spec.split(":", 1)[1])
        torch.manual_seed(seed)
        kwargs = {}
        if encoder_layers:
            kwargs["encoder_num_hidden_layers"] = encoder_layers
        if decoder_layers:
            kwargs["decoder_num_hidden_layers"] = decoder_layers
        try:
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path, **kwargs)
            tok = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise RayragError(f"--generator {spec}: cannot load ({str(e).splitlines()[0]})") from e
        if cross_attention_init == "self":
            log.info("cross-attention of %d decoder layers started from their self-attention",
                     init_cross_attention_from_self(model))
        ids = _fix_special_ids(model.config, tok)
        for k, v in ids.items():
            setattr(model.generation_config, k, v)
        return model, tok
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(spec)
        tok = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as e:
        raise RayragError(
            f"--generator {spec}: cannot load a seq2seq model ({str(e).splitlines()[0]}); use a hub name, "
            "a local directory, `minilm`, `bert2bert:PATH`, `tiny-bart` or `tiny-t5`") from e
    return model, tok


def init_model(opts: InitOptions) -> Path:
    """Assemble and save the model described by `opts`; returns the model directory."""
    from transformers import RagConfig

    opts.validate()
    opts = opts.resolved()
    out = Path(opts.out)
    if out.exists() and not opts.overwrite:
        raise RayragError(f"{out}: already exists; pass --overwrite or choose another --out")
    kb = opts.kb.location()
    manifest = describe_kb(kb) if kb is not None else None
    if manifest is not None and not manifest.encoder and opts.question_encoder is None:
        raise RayragError(
            f"--question_encoder: {kb} records no encoder (a Hugging Face RAG knowledge base); name the question "
            "encoder that matches the context encoder its vectors came from, e.g. "
            "facebook/dpr-question_encoder-multiset-base")
    q_name = opts.question_encoder or (kb_encoder(Path(kb.kb), manifest) if manifest else encoders.MINILM)
    pooling = manifest.pooling if manifest is not None else (opts.pooling or encoders.default_pooling(q_name))
    if manifest is not None and opts.pooling not in (None, manifest.pooling):
        raise RayragError(f"--pooling {opts.pooling}: the knowledge base {kb} was embedded with {manifest.pooling} "
                          "pooling; drop --pooling (the question encoder takes the knowledge base's), or rebuild the "
                          f"knowledge base with `rayrag index --pooling {opts.pooling}`")
    q_model, q_tok = encoders.load_question_encoder(q_name, pooling=pooling)
    generator, g_tok = build_generator(opts.generator, q_tok, opts.generator_decoder_layers, opts.seed,
                                       encoder_layers=opts.generator_encoder_layers,
                                       cross_attention_init=opts.cross_attention_init)

    if opts.model_type not in RAG_TYPES:
        info = ModelInfo(model_type=opts.model_type)
        save_model(out, generator, g_tok, g_tok, info, overwrite=opts.overwrite)
        log.info("wrote closed-book %s model to %s", opts.model_type, out)
        return out

    dim = encoders.output_dim(q_model)
    if dim != manifest.dim:
        raise RayragError(
            f"--question_encoder {q_name}: makes vectors of size {dim} but {kb} holds vectors of size "
            f"{manifest.dim}; use the encoder the knowledge base was built with ({manifest.encoder or 'not recorded'})")
    if manifest.n_passages < opts.n_docs:
        raise RayragError(f"--n_docs {opts.n_docs}: the knowledge base {kb} has only "
                          f"{manifest.n_passages} passages")
    g_cfg = generator.config
    config = RagConfig.from_question_encoder_generator_configs(
        q_model.config, g_cfg, n_docs=opts.n_docs, max_combined_length=opts.max_combined_length,
        retrieval_vector_size=dim, pad_token_id=g_cfg.pad_token_id, eos_token_id=g_cfg.eos_token_id,
        bos_token_id=getattr(g_cfg, "bos_token_id", None),
        decoder_start_token_id=g_cfg.decoder_start_token_id)
    model = rag_class(opts.model_type)(config=config, question_encoder=q_model, generator=generator)
    if getattr(model, "generation_config", None) is not None:  # RagSequence has none
        for k in ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id"):
            setattr(model.generation_config, k, getattr(config, k))
    info = record_kb(model, ModelInfo(opts.model_type), kb)  # config: index_name custom, passages_path, index_path
    context_encoder = None
    if opts.context_encoder is not None:
        from rayrag.encoders.load import load_trainable_context_encoder
        from rayrag.model.checkpoint import CONTEXT_DIR

        c_name = recorded_encoder(kb, manifest) if opts.context_encoder == "kb" else opts.context_encoder
        if c_name is None:
            raise RayragError(f"--context_encoder kb: {kb} records no encoder (a Hugging Face RAG knowledge base); "
                              "name the context encoder its vectors came from")
        context_encoder = load_trainable_context_encoder(c_name, pooling, flag="--context_encoder")
        if encoders.output_dim(context_encoder.encoder) != dim:
            raise RayragError(f"--context_encoder {c_name}: makes vectors of size "
                              f"{encoders.output_dim(context_encoder.encoder)} but {kb} holds vectors of size {dim}")
        info.context_encoder = CONTEXT_DIR
    save_model(out, model, q_tok, g_tok, info, overwrite=opts.overwrite, context_encoder=context_encoder)
    log.info("wrote %s model to %s (question encoder %s, %s pooling, generator %s, knowledge base %s)",
             opts.model_type, out, q_name, pooling, opts.generator, kb)
    return out
