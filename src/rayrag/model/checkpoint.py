"""Model directories: Hugging Face `save_pretrained` layouts plus a small `rayrag.json`.

A RAG directory loads with plain transformers too (`RagTokenForGeneration.from_pretrained(dir)`,
`RagRetriever.from_pretrained(dir)`: its config points at the knowledge base's passages and index).

    MODEL_DIR/config.json, model.safetensors, generation_config.json
    MODEL_DIR/question_encoder_tokenizer/, generator_tokenizer/   (RAG)  or tokenizer files (seq2seq)
    MODEL_DIR/mean_pooling_dpr.py   (RAG with a mean-pooling question encoder: its code, for plain transformers)
    MODEL_DIR/context_encoder/   (RAG trained end to end, or made with one: the DPR context encoder it carries)
    MODEL_DIR/rayrag.json   {"model_type": ..., "kb": absolute knowledge base path or null
                             [, "index_path": its FAISS file, for a Hugging Face RAG knowledge base]
                             [, "context_encoder": "context_encoder"]}

The question encoder's config records its pooling (`rayrag.encoders.pooling`): model type `dpr` pools by the first
token (plain transformers loads it), `rayrag_dpr_mean` by the mean of the tokens. A mean-pooled directory carries
that encoder's code (`mean_pooling_dpr.py`, torch and transformers only) named by `auto_map` in config.json, so
plain transformers loads it after `AutoConfig.from_pretrained(dir, trust_remote_code=True)`, and rayrag once
`rayrag.encoders` is imported (this module does); a model is used only with a knowledge base of the same pooling
(`check_pooling`).

A RAG directory saved by plain transformers (no rayrag.json) works as well: its type comes from the
config's architectures, its knowledge base from the config's passages_path/index_path. `--model_type`
picks the class, as in the reference: any RAG checkpoint loads as rag_token or rag_sequence (both hold
RagModel's weights); a closed-book type on a RAG checkpoint, or the reverse, is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import typing
from dataclasses import asdict, dataclass
from pathlib import Path

from rayrag.errors import RayragError
from rayrag.atomic import atomic_dir
from rayrag.kb.layout import KbLocation, from_flags, from_pair
from rayrag.model.options import ClosedBookType, RagType

log = logging.getLogger(__name__)

INFO_FILE = "rayrag.json"
RAG_TYPES: tuple[str, ...] = typing.get_args(RagType)
SEQ2SEQ_TYPES: tuple[str, ...] = typing.get_args(ClosedBookType)
MODEL_TYPES = RAG_TYPES + SEQ2SEQ_TYPES
KB_FIX = "pass --kb KB_DIR, or --passages_path P --index_path I for a Hugging Face RAG knowledge base"
CODE_MODULE = "mean_pooling_dpr"
"""The file (`CODE_MODULE`.py) a mean-pooled RAG directory carries: `rayrag/encoders/mean_pooling_dpr.py`."""
AUTO_CONFIG = f"{CODE_MODULE}.MeanPoolingRagConfig"
CONTEXT_DIR = "context_encoder"
"""The directory inside a model directory that holds the context encoder it carries (`ModelInfo.context_encoder`)."""


@dataclass
class ModelInfo:
    """What rayrag needs to know about a model directory beyond its Hugging Face files."""

    model_type: str
    kb: str | None = None
    """The knowledge base (a rayrag directory, or a Hugging Face RAG passages directory with `index_path`)."""
    index_path: str | None = None
    """The Hugging Face RAG knowledge base's FAISS file; None for a rayrag directory."""
    context_encoder: str | None = None
    """The directory, inside the model directory, of the context encoder the model carries (`context_encoder`: written
    by `rayrag train --train_context_encoder` and `init-model --context_encoder`); None: none."""

    @property
    def is_rag(self) -> bool:
        return self.model_type in RAG_TYPES

    @property
    def location(self) -> KbLocation | None:
        """The knowledge base this model was built or trained with, if one is recorded."""
        return KbLocation(self.kb, self.index_path) if self.kb is not None else None

    def to_json(self) -> str:
        """rayrag.json's text (`index_path` only where there is one, so older readers see the same file)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("index_path", "context_encoder") or v is not None}
        return json.dumps(data, indent=2) + "\n"


def with_type(info: ModelInfo, model_type: str | None, where: str) -> ModelInfo:
    """The model to load when --model_type asks for `model_type`: as the reference does, any RAG checkpoint loads
    as rag_sequence or rag_token (one log line says so when it was saved as the other); closed-book types load as
    the generator they are. A RAG type on a closed-book model, or the reverse, is refused."""
    if model_type is None or model_type == info.model_type:
        return info
    if model_type not in MODEL_TYPES:
        raise RayragError(f"--model_type {model_type!r}: choose one of {', '.join(MODEL_TYPES)}")
    if (model_type in RAG_TYPES) != info.is_rag:
        held = f"RAG model ({info.model_type})" if info.is_rag else f"closed-book {info.model_type} model"
        raise RayragError(f"--model_type {model_type} contradicts {where}, which holds a {held}; drop --model_type "
                          "or pick the matching model")
    if not info.is_rag:
        return info  # bart | t5 | seq2seq: the class comes from the generator's own config
    log.info("%s was saved as %s; loading it as %s (--model_type): both classes hold the same RagModel weights",
             where, info.model_type, model_type)
    return dataclasses.replace(info, model_type=model_type)


def rag_class(model_type: str):
    from transformers import RagSequenceForGeneration, RagTokenForGeneration

    return RagTokenForGeneration if model_type == "rag_token" else RagSequenceForGeneration


def read_info(model_dir: Path) -> ModelInfo:
    """The `rayrag.json` of `model_dir`, or one inferred from a plain Hugging Face RAG/seq2seq config."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RayragError(f"{model_dir}: no such model directory; create one with `rayrag init-model`")
    path = model_dir / INFO_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            info = ModelInfo(model_type=data["model_type"], kb=data.get("kb"), index_path=data.get("index_path"),
                             context_encoder=data.get("context_encoder"))
        except (ValueError, KeyError, TypeError) as e:
            raise RayragError(f"{path}: damaged ({e}); recreate the model with `rayrag init-model`") from e
        if info.model_type not in MODEL_TYPES:
            raise RayragError(f"{path}: unknown model_type {info.model_type!r}")
        return info
    config = model_dir / "config.json"
    if not config.is_file():
        raise RayragError(
            f"{model_dir}: not a model directory (no config.json); create one with `rayrag init-model` "
            "or point --model at a `rayrag train` output")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except ValueError as e:
        raise RayragError(f"{config}: damaged ({e})") from e
    arch = " ".join(cfg.get("architectures") or [])
    if cfg.get("model_type") == "rag":
        kb = _kb_of_config(cfg, config)
        return ModelInfo("rag_token" if "RagToken" in arch else "rag_sequence", kb.kb if kb else None,
                         kb.index_path if kb else None)
    if cfg.get("is_encoder_decoder"):
        return ModelInfo("seq2seq")
    raise RayragError(
        f"{model_dir}: not a RAG checkpoint or a seq2seq model (config.json model_type "
        f"{cfg.get('model_type')!r}); create one with `rayrag init-model`")


def _kb_of_config(cfg: dict, config: Path) -> KbLocation | None:
    """The knowledge base a RAG config's `passages_path` / `index_path` name (kb/layout.py `from_pair`): a rayrag
    directory (`rayrag init-model` points into one) or a Hugging Face RAG knowledge base; None when they name none
    (a hub index, or half a pair: the user passes --kb then)."""
    if cfg.get("index_name") not in (None, "custom"):
        return None
    try:
        return from_pair(cfg.get("passages_path") or None, cfg.get("index_path") or None,
                         flags=(f"{config}: passages_path", "index_path"))
    except RayragError as e:
        log.warning("%s; pass --kb or --passages_path/--index_path", e)
        return None


def save_model(out_dir: str | Path, model, question_tokenizer, generator_tokenizer, info: ModelInfo,
               overwrite: bool = True, context_encoder=None) -> Path:
    """Write a model directory atomically (`rayrag.atomic.atomic_dir`): into a temporary sibling, fsynced,
    then renamed into place; an existing `out_dir` is refused unless `overwrite`. `context_encoder` (an
    `encoders.context.ContextEncoder`) is written to `info.context_encoder` inside it, not into the RAG weights (a
    model that trains one holds it as `rag.ctx_encoder`, which `from_pretrained` would not expect)."""
    from transformers import RagTokenizer

    out = Path(out_dir)
    if context_encoder is not None and not info.context_encoder:
        raise ValueError("save_model: a context encoder needs info.context_encoder, the directory it goes to")
    rag = getattr(model, "rag", None)
    training_one = getattr(rag, "ctx_encoder", None)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if training_one is not None:
            rag.ctx_encoder = None
        try:
            model.save_pretrained(tmp)
        finally:
            if training_one is not None:
                rag.ctx_encoder = training_one
        if context_encoder is not None:
            context_encoder.save(tmp / info.context_encoder)
        if info.is_rag:
            RagTokenizer(question_encoder=question_tokenizer, generator=generator_tokenizer).save_pretrained(tmp)
            write_encoder_code(tmp, model.config.question_encoder)
        else:
            generator_tokenizer.save_pretrained(tmp)
        (tmp / INFO_FILE).write_text(info.to_json(), encoding="utf-8")
    return out


def write_encoder_code(model_dir: Path, question_encoder_config) -> None:
    """Make a saved RAG directory open in plain transformers whatever its pooling: a mean-pooled question encoder's
    code is copied in (`CODE_MODULE`.py, importing only torch and transformers) and config.json's `auto_map` names it
    for `AutoConfig`, so `AutoConfig.from_pretrained(dir, trust_remote_code=True)` registers the encoder before
    `RagRetriever`/`Rag*ForGeneration.from_pretrained(dir)` read the config; a first-token one (transformers' own
    `DPRQuestionEncoder`) needs neither, and loses an `auto_map` entry copied from a mean-pooled config."""
    from rayrag.encoders import mean_pooling_dpr, pooling

    config_file = Path(model_dir) / "config.json"
    data = json.loads(config_file.read_text(encoding="utf-8"))
    auto_map = dict(data.get("auto_map") or {})
    if pooling.of_question_encoder(question_encoder_config) == "mean":
        shutil.copyfile(mean_pooling_dpr.__file__, Path(model_dir) / f"{CODE_MODULE}.py")
        auto_map["AutoConfig"] = AUTO_CONFIG
    elif auto_map.get("AutoConfig") == AUTO_CONFIG:
        del auto_map["AutoConfig"]
    if auto_map:
        data["auto_map"] = auto_map
    else:
        data.pop("auto_map", None)
    config_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass
class LoadedModel:
    """A model ready to run: the torch module, its tokenizers, its info and (RAG) its retriever."""

    model: object
    question_tokenizer: object
    generator_tokenizer: object
    info: ModelInfo
    retriever: object = None


def load_model(model_dir: str | Path, *, kb: KbLocation | str | Path | None = None, client=None,
               retrieval: bool = True, model_type: str | None = None, info: ModelInfo | None = None) -> LoadedModel:
    """Load a model directory. RAG models get a `RayragRetriever` over the retrieval `client`, or over a
    local client on `kb` (a `KbLocation`, or a directory of either layout; default: the knowledge base the
    model records); with `retrieval=False` no retriever is attached (training attaches one per process).
    `model_type` loads a RAG checkpoint as the other RAG class (`with_type`); `info`, if given, is used
    instead of reading the directory's (already typed)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, RagConfig, RagTokenizer

    import rayrag.encoders  # noqa: F401  (registers the mean-pooling question encoder with transformers)

    model_dir = Path(model_dir)
    info = info or with_type(read_info(model_dir), model_type, str(model_dir))
    try:
        if not info.is_rag:
            model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
            tok = AutoTokenizer.from_pretrained(model_dir)
            return LoadedModel(model, tok, tok, info)
        config = RagConfig.from_pretrained(model_dir)
        tokenizers = RagTokenizer.from_pretrained(model_dir, config=config)
        model = rag_class(info.model_type).from_pretrained(model_dir, config=config)
    except (OSError, ValueError, KeyError) as e:
        raise RayragError(f"{model_dir}: cannot load the model ({str(e).splitlines()[0]})") from e
    if not retrieval:
        return LoadedModel(model, tokenizers.question_encoder, tokenizers.generator, info)
    if client is None:
        from rayrag.retrieval.local import LocalSpec

        where = kb if isinstance(kb, KbLocation) else from_flags(kb) if kb is not None else info.location
        if where is None:
            raise RayragError(f"{model_dir}: no knowledge base recorded; {KB_FIX}")
        try:
            client = LocalSpec(kb=where.kb, index_path=where.index_path).connect()
        except RayragError as e:
            if kb is not None:
                raise
            raise RayragError(f"{e} (the knowledge base {model_dir} records; to use another, {KB_FIX})") from e
        try:
            check_pooling(model, where, str(model_dir))
        except RayragError:
            client.close()
            raise
    retriever = attach_retriever(model, tokenizers.question_encoder, tokenizers.generator, client,
                                 where=str(model_dir))
    return LoadedModel(model, tokenizers.question_encoder, tokenizers.generator, info, retriever)


def kb_pooling(kb: KbLocation) -> str:
    """How a knowledge base's vectors were pooled: its manifest's `pooling` (`cls` in manifests older than the
    field); `cls` for a Hugging Face RAG knowledge base (the example's DPR encoders)."""
    from rayrag.kb.manifest import Manifest

    return "cls" if kb.is_reference else Manifest.read(Path(kb.kb)).pooling


def check_pooling(model, kb: KbLocation, where: str) -> None:
    """Refuse a RAG model whose question encoder pools differently from the knowledge base's vectors (one line
    naming both and the fix)."""
    from rayrag.encoders import pooling

    pooling.check(pooling.of_question_encoder(model.config.question_encoder), kb_pooling(kb), where, str(kb))


def record_kb(model, info: ModelInfo, kb: KbLocation) -> ModelInfo:
    """Point a RAG model at the knowledge base `kb`: its config (index_name custom, passages_path, index_path, so
    `RagRetriever.from_pretrained` finds it with plain transformers) and the returned info (rayrag.json)."""
    model.config.index_name = "custom"
    model.config.passages_path, model.config.index_path = kb.rag_paths()
    return dataclasses.replace(info, kb=kb.kb, index_path=kb.index_path)


def attach_retriever(model, question_tokenizer, generator_tokenizer, client, where: str = "model"):
    """Give a RAG model a `RayragRetriever` over the retrieval `client`, after checking vector sizes agree."""
    from rayrag.retrieval.retriever import RayragRetriever

    if client.dim != model.config.retrieval_vector_size:
        raise RayragError(
            f"{where}: the question encoder makes vectors of size {model.config.retrieval_vector_size} "
            f"but the knowledge base holds vectors of size {client.dim}; use a knowledge base built "
            "with the matching context encoder")
    retriever = RayragRetriever(model.config, question_tokenizer, generator_tokenizer, client)
    model.set_retriever(retriever)
    return retriever
