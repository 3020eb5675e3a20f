"""`local` backend: the index lives in the calling process (the floor every other backend is measured against)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rayrag.kb.store import KnowledgeBase
from rayrag.retrieval import search as _search
from rayrag.retrieval.base import Retrieved
from rayrag.retrieval.search import FAST, SearchSettings


class LocalBackend:
    """Searches a knowledge base opened in this process (FAISS index memory-mapped)."""

    name = "local"

    def __init__(self, kb: KnowledgeBase | str | Path, settings: SearchSettings = FAST):
        self.kb = kb if isinstance(kb, KnowledgeBase) else KnowledgeBase(kb)
        self.settings = settings
        settings.apply()
        self.dim = self.kb.dim
        self.n_passages = len(self.kb)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _search.search(self.kb, queries, k, self.settings)

    def retrieve(self, queries: np.ndarray, k: int) -> Retrieved:
        return _search.retrieve(self.kb, queries, k, self.settings)

    def close(self) -> None:
        pass
