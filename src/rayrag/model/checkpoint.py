"""Model directories: Hugging Face `save_pretrained` layouts plus a small `rayrag.json`.

A RAG directory loads with plain transformers too (`RagTokenForGeneration.from_pretrained(dir)`,
`RagRetriever.from_pretrained(dir)`: its config points at the knowledge base's passages and index).

    MODEL_DIR/config.json, model.safetensors, generation_config.json
    MODEL_DIR/question_encoder_tokenizer/, generator_tokenizer/   (RAG)  or tokenizer files (seq2seq)
    MODEL_DIR/rayrag.json   {"model_type": ..., "kb": absolute knowledge base path or null}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rayrag.errors import RayragError
from rayrag.io import atomic_dir

INFO_FILE = "rayrag.json"
RAG_TYPES = ("rag_sequence", "rag_token")
SEQ2SEQ_TYPES = ("bart", "t5", "seq2seq")
MODEL_TYPES = RAG_TYPES + SEQ2SEQ_TYPES


@dataclass
class ModelInfo:
    """What rayrag needs to know about a model directory beyond its Hugging Face files."""

    model_type: str
    kb: str | None = None

    @property
    def is_rag(self) -> bool:
        return self.model_type in RAG_TYPES


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
            info = ModelInfo(model_type=data["model_type"], kb=data.get("kb"))
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
        return ModelInfo("rag_token" if "RagToken" in arch else "rag_sequence", _kb_of_config(cfg))
    if cfg.get("is_encoder_decoder"):
        return ModelInfo("seq2seq")
    raise RayragError(
        f"{model_dir}: not a RAG checkpoint or a seq2seq model (config.json model_type "
        f"{cfg.get('model_type')!r}); create one with `rayrag init-model`")


def _kb_of_config(cfg: dict) -> str | None:
    """The knowledge base directory a RAG config's `passages_path` / `index_path` point into (both inside one
    directory, as `rayrag init-model` writes them), or None."""
    paths = [Path(p) for p in (cfg.get("passages_path"), cfg.get("index_path")) if p]
    parents = {p.parent for p in paths}
    return str(parents.pop()) if len(parents) == 1 else None


def save_model(out_dir: str | Path, model, question_tokenizer, generator_tokenizer, info: ModelInfo,
               overwrite: bool = True) -> Path:
    """Write a model directory atomically (`rayrag.io.atomic_dir`): into a temporary sibling, fsynced,
    then renamed into place; an existing `out_dir` is refused unless `overwrite`."""
    from transformers import RagTokenizer

    out = Path(out_dir)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        if info.is_rag:
            RagTokenizer(question_encoder=question_tokenizer, generator=generator_tokenizer).save_pretrained(tmp)
        else:
            generator_tokenizer.save_pretrained(tmp)
        (tmp / INFO_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    return out


@dataclass
class LoadedModel:
    """A model ready to run: the torch module, its tokenizers, its info and (RAG) its retriever."""

    model: object
    question_tokenizer: object
    generator_tokenizer: object
    info: ModelInfo
    retriever: object = None


def load_model(model_dir: str | Path, *, kb: str | Path | None = None, client=None,
               retrieval: bool = True) -> LoadedModel:
    """Load a model directory. RAG models get a `RayragRetriever` over the retrieval `client`, or over a
    local client on `kb` (default: the knowledge base recorded at `init-model` time); with
    `retrieval=False` no retriever is attached (training attaches one per process)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, RagConfig, RagTokenizer

    model_dir = Path(model_dir)
    info = read_info(model_dir)
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

        kb_path = kb or info.kb
        if kb_path is None:
            raise RayragError(f"{model_dir}: no knowledge base recorded; pass --kb KB_DIR")
        client = LocalSpec(kb=str(kb_path)).connect()
    retriever = attach_retriever(model, tokenizers.question_encoder, tokenizers.generator, client,
                                 where=str(model_dir))
    return LoadedModel(model, tokenizers.question_encoder, tokenizers.generator, info, retriever)


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
