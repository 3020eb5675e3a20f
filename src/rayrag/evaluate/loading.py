"""A model ready to answer, retrieving through any backend: what `rayrag eval` and `rayrag ask` load.

With the default `local` backend the model maps its knowledge base in this process (`load_model`); with another
(`--distributed_retriever ray --ray_address auto`) this process opens that backend's service, as a training job's
driver does, and the model retrieves through a client of it. Either way the service is closed on the way out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from rayrag.cluster.args import ClusterArgs
from rayrag.errors import RayragError
from rayrag.kb.args import KbArgs
from rayrag.model.checkpoint import KB_FIX, LoadedModel, attach_retriever, check_pooling, load_model, read_info, \
    with_type
from rayrag.retrieval.options import RetrievalArgs, RetrievalOptions
from rayrag.retrieval.service import open_service


@contextlib.contextmanager
def answering(model: Path, kb: KbArgs, retrieval: RetrievalArgs, cluster: ClusterArgs,
              model_type: str | None = None) -> Iterator[LoadedModel]:
    """The model in `model`, loaded as `model_type` (default: as saved), retrieving from `kb` (default: the knowledge
    base it records) through the backend `retrieval` names; closes what it opened when the block ends."""
    if retrieval.backend == "local":
        loaded = load_model(model, kb=kb.location(), model_type=model_type)
        try:
            yield loaded
        finally:
            if loaded.retriever is not None:
                loaded.retriever.client.close()
        return
    info = with_type(read_info(Path(model)), model_type, str(model))
    if not info.is_rag:
        raise RayragError(f"--retrieval.backend {retrieval.backend}: {model} is a closed-book {info.model_type} model "
                          "that retrieves nothing; drop the flag")
    where = kb.location() or info.location
    if where is None:
        raise RayragError(f"{model}: no knowledge base recorded; {KB_FIX}")
    loaded = load_model(model, retrieval=False, info=info)
    check_pooling(loaded.model, where, str(model))
    service = open_service(RetrievalOptions.of(where, retrieval, ray_address=cluster.address))
    try:
        client = service.spec.connect()
        try:
            retriever = attach_retriever(loaded.model, loaded.question_tokenizer, loaded.generator_tokenizer, client,
                                         where=str(model))
            yield LoadedModel(loaded.model, loaded.question_tokenizer, loaded.generator_tokenizer, info, retriever)
        finally:
            client.close()
    finally:
        service.close()
