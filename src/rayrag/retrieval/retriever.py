"""`RayragRetriever`: the Hugging Face `RagRetriever` served by a rayrag retrieval backend.

`RagTokenForGeneration` / `RagSequenceForGeneration` call the retriever with question vectors;
this subclass answers from whichever retrieval client it was given (local, pytorch, ray) and records
the time of every call, so the RAG classes work unchanged. Training, validation and prediction all
retrieve through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator

import numpy as np
from transformers import RagConfig, RagRetriever
from transformers.models.rag.retrieval_rag import Index

from rayrag.retrieval.base import RetrievalClient, Retrieved


class ClientIndex(Index):
    """The `index` a `RagRetriever` is built with: the retrieval client answers every call (`RayragRetriever.retrieve`
    overrides the methods that would ask the index), so this only tells transformers that it is ready."""

    def __init__(self, client: RetrievalClient):
        self.client = client

    def is_initialized(self) -> bool:
        return True

    def init_index(self) -> None:
        pass


class RayragRetriever(RagRetriever):
    """A `RagRetriever` whose index is a rayrag retrieval client.

    call_seconds holds the wall time of every retrieval call made through this retriever, and
    call_ids_sha1 a fingerprint of the ids it returned (the first 16 hex digits of the sha1 of the
    (B, k) int64 ids, C order): two runs retrieved the same passages at every call if the lists are
    equal; call_generations the index generation each call retrieved from (`RetrievalClient.switch`).
    `rayrag train --profile` writes them to retrieval_profile.json. Prediction reads the whole answers
    (scores, ids, titles, texts) of the calls its generation made through `capture`.
    """

    def __init__(self, config: RagConfig, question_encoder_tokenizer, generator_tokenizer,
                 client: RetrievalClient):
        self.client = client
        self.call_seconds: list[float] = []
        self.call_ids_sha1: list[str] = []
        self.call_generations: list[int] = []
        self._captured: list[Retrieved] | None = None
        super().__init__(config, question_encoder_tokenizer, generator_tokenizer,
                         index=ClientIndex(client), init_retrieval=False)

    def init_retrieval(self) -> None:
        pass

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[Retrieved]]:
        """The answers of the calls made while the block runs, in order. RAG-token's `generate` retrieves once for
        the batch; RAG-sequence's retrieves for the batch, then again while it scores each question's candidate
        answers: the batch's passages are the first call's."""
        self._captured = calls = []
        try:
            yield calls
        finally:
            self._captured = None

    def postprocess_docs(self, docs, input_strings, prefix, n_docs, return_tensors=None):
        """As `RagRetriever.postprocess_docs` ("title / text // question" per passage), but padded to the
        longest input of the batch instead of always to `max_combined_length`: the same model inputs
        under the attention mask, with less padding for the generator's encoder to run over."""
        prefix = prefix or ""
        strings = [(prefix + docs[i]["title"][j].removeprefix('"').removesuffix('"') + self.config.title_sep
                    + docs[i]["text"][j] + self.config.doc_sep + input_strings[i]).replace("  ", " ")
                   for i in range(len(docs)) for j in range(n_docs)]
        enc = self.generator_tokenizer(strings, max_length=self.config.max_combined_length,
                                       return_tensors=return_tensors, padding="longest", truncation=True)
        return enc["input_ids"], enc["attention_mask"]

    def retrieve(self, question_hidden_states: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """Passage vectors (B, k, d) float32, ids (B, k) int64 and a dict per query (title, text lists)."""
        t0 = time.perf_counter()
        r = self.client.retrieve(np.asarray(question_hidden_states, dtype=np.float32), n_docs)
        self.call_seconds.append(time.perf_counter() - t0)
        self.call_ids_sha1.append(ids_digest(r.ids))
        self.call_generations.append(int(self.client.generation))
        if self._captured is not None:
            self._captured.append(r)
        docs = [{"title": r.titles[i], "text": r.texts[i]} for i in range(len(r.titles))]
        return r.vectors, r.ids, docs


def ids_digest(ids: np.ndarray) -> str:
    """Fingerprint of retrieved ids (B, k): the first 16 hex digits of the sha1 of their int64 bytes."""
    return hashlib.sha1(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]
