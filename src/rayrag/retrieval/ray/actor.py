"""`RetrievalActor`: one Ray actor that serves whole retrieval calls from one knowledge base.

It opens the knowledge base with the FAISS index memory-mapped (rayrag policy: the actors of a node
share its pages; reference policy: a private copy each), answers a call in one
round trip (`retrieve`: ids, scores, vectors, titles, texts; `nearest`: the same without titles and texts,
which the client then reads from its own memory map of the passages), and hands concurrent calls to one
searcher thread that merges those waiting together (`coalesce.Coalescer`). Every call goes through `_call`
(tests inject faults there, in a subclass).

A call may name an index generation (`generation`: [number, knowledge base], `rayrag.reindex`): the actor opens that
knowledge base on the first call that names it and answers from it; calls of different generations are never merged.
It keeps the newest generation and the one before it open (a call re-sent late may still name that one), and drops
older ones. An actor that Ray restarts opens the original knowledge base and the generation again on the next call.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from rayrag.retrieval.base import Retrieved


class RetrievalActor:
    """Serves retrieval from one knowledge base. Made a Ray actor by `RayPool`."""

    def __init__(self, kb_dir: str, policy: str, threads: int, coalesce: bool, index: int = 0,
                 window_s: float = 0.0, index_path: str | None = None):
        from rayrag.kb.store import KnowledgeBase
        from rayrag.retrieval.ray.coalesce import Coalescer
        from rayrag.retrieval.search import settings_named

        t0 = time.perf_counter()
        # The driver verified the checksums once; the actors check sizes only.
        # `index_path`: a Hugging Face RAG knowledge base (`kb_dir` its passages), checked as it opens.
        self.kb = KnowledgeBase(kb_dir, index_path=index_path, mmap=policy != "reference", verify_checksums=False)
        self.settings = settings_named("reference" if policy == "reference" else "fast", threads)
        self.threads = threads
        self.index = index
        """This actor's place in its pool (0..M-1)."""
        self.coalescer = Coalescer(self._run_batch, window_s) if coalesce else None
        self.calls = 0
        self.load_seconds = time.perf_counter() - t0
        self.mmap = policy != "reference"
        self.generations = {0: self.kb}
        """Index generation -> its open knowledge base (0: the one the pool was made over)."""
        self._opening = threading.Lock()

    def ready(self) -> dict:
        """Facts about this actor: pid, node, index size, threads, load time, the passages' fingerprint."""
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "dim": self.kb.dim,
                "n_passages": len(self.kb), "threads": self.threads, "load_seconds": self.load_seconds,
                "fingerprint": self.kb.fingerprint()}

    def pid(self) -> int:
        return os.getpid()

    def stats(self) -> dict:
        """Calls served and FAISS threads; with coalescing, how many searches ran, their sizes (in requests), the
        seconds spent searching and the seconds requests waited before their search started."""
        if self.coalescer is None:
            return {"calls": self.calls, "threads": self.threads}
        s = self.coalescer.stats  # counted under the coalescer's lock: calls arrive on many threads
        return {"calls": s.requests, "threads": self.threads, "searches": s.batches, "largest": s.largest,
                "sizes": dict(s.sizes), "busy_s": s.busy_s, "waited_s": s.waited_s}

    def _generation(self, generation) -> int:
        """The number of the generation a call names (0: none), opened if it is new; older ones dropped."""
        if not generation:
            return 0
        number, path = int(generation[0]), str(generation[1])
        if number not in self.generations:
            from rayrag.kb.store import KnowledgeBase

            with self._opening:  # calls arrive on many threads
                if number not in self.generations:
                    self.generations[number] = KnowledgeBase(path, mmap=self.mmap, verify_checksums=False)
                    for old in [g for g in self.generations if g < number - 1]:
                        del self.generations[old]
        return number

    def _run_batch(self, key: tuple[str, int, int], payloads: list[np.ndarray]) -> list:
        from rayrag.retrieval import search as _search

        kind, k, generation = key
        kb = self.generations[generation]
        if kind == "passages":
            return [kb.passages(ids) for ids in payloads]
        queries = np.concatenate(payloads, axis=0) if len(payloads) > 1 else payloads[0]
        bounds = np.cumsum([0] + [len(p) for p in payloads])
        if kind == "search":
            scores, ids = _search.search(kb, queries, k, self.settings)
            return [(scores[a:b], ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        if kind == "nearest":
            scores, ids, vectors = _search.nearest(kb, queries, k, self.settings)
            return [(scores[a:b], ids[a:b], vectors[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        r = _search.retrieve(kb, queries, k, self.settings)
        return [r.rows(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def _call(self, kind: str, payload: np.ndarray, k: int, generation=None):
        """Serve one call of `kind` (retrieve, search, nearest, passages) for `payload` with `k`, from the index
        generation `generation` ([number, knowledge base]; None: the pool's own)."""
        payload = np.asarray(payload, dtype=np.int64 if kind == "passages" else np.float32)
        key = (kind, int(k), self._generation(generation))
        if self.coalescer is not None:
            return self.coalescer.submit(key, payload)
        self.calls += 1  # a serial actor: one call at a time
        return self._run_batch(key, [payload])[0]

    def retrieve(self, queries: np.ndarray, k: int, generation=None) -> Retrieved:
        """The full retrieval call for queries (B, d) float32: scores, ids, vectors, titles, texts."""
        return self._call("retrieve", queries, k, generation)

    def search(self, queries: np.ndarray, k: int, generation=None) -> tuple[np.ndarray, np.ndarray]:
        """Scores (B, k) float32 and ids (B, k) int64 only."""
        return self._call("search", queries, k, generation)

    def nearest(self, queries: np.ndarray, k: int, generation=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores (B, k), ids (B, k) and vectors (B, k, d): a retrieval call whose client reads the titles
        and texts itself (the reference's split, and what keeps the look-ups of W ranks off the searcher)."""
        return self._call("nearest", queries, k, generation)

    def passages(self, ids: np.ndarray, k: int = 0, generation=None):
        """Vectors, titles and texts of the passages `ids` (B, k) int64."""
        return self._call("passages", ids, k, generation)
