"""A knowledge base opened for search: passages (Arrow, memory-mapped) and the FAISS index.

rayrag's layout (see docs/ARCHITECTURE.md), checked against its manifest:
    KB_DIR/manifest.json      what is here, with sizes and checksums
    KB_DIR/passages/          `datasets` Arrow dataset: title, text, embeddings
    KB_DIR/index.faiss        FAISS index over the embeddings, row i = passage i
or, given `index_path`, the Hugging Face RAG example's layout, read as it is (kb/reference.py): a
passages directory (title, text, embeddings) and a FAISS file. kb/layout.py tells them apart.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from rayrag.errors import RayragError
from rayrag.kb import faiss_index, reference
from rayrag.kb.manifest import INDEX_FILE, PASSAGES_DIR, Manifest, verify_files

log = logging.getLogger(__name__)


@dataclass
class Passages:
    """Passages for a batch of queries: ids (B, k) int64, vectors (B, k, d) float32, titles and texts [B][k]."""

    ids: np.ndarray
    vectors: np.ndarray
    titles: list[list[str]]
    texts: list[list[str]]


def _load_passages(path: Path):
    """The `datasets.Dataset` of a rayrag knowledge base's passages/ (memory-mapped)."""
    from datasets import load_from_disk

    try:
        return load_from_disk(str(path))
    except Exception as e:  # datasets raises assorted errors for a damaged directory
        raise RayragError(
            f"{path}: passages cannot be read ({type(e).__name__}); rebuild the knowledge base with "
            "`rayrag index`") from e


def check_k(k: int, n_passages: int, where: object, flag: str = "--n_docs") -> None:
    """Refuse a number of passages per question that the knowledge base `where` cannot give."""
    if not 1 <= k <= n_passages:
        raise RayragError(f"{flag} {k}: must be between 1 and the {n_passages} passages of {where}")


class KnowledgeBase:
    """Passages and index of one knowledge base: a rayrag directory `kb`, checked against its manifest on open, or
    with `index_path` the Hugging Face RAG layout (`kb` its passages directory), checked as far as it can be."""

    def __init__(self, kb: str | Path, *, index_path: str | Path | None = None, mmap: bool = True,
                 verify_checksums: bool = True, load_index: bool = True):
        self.path = Path(kb)
        self.index_path = Path(index_path) if index_path is not None else None
        t0 = time.perf_counter()
        if self.index_path is None:
            self.manifest = Manifest.read(self.path)
            verify_files(self.path, self.manifest, checksums=verify_checksums)
            dataset = _load_passages(self.path / PASSAGES_DIR)
            index_file = self.path / INDEX_FILE
        else:
            dataset, self.manifest = reference.open_passages(self.path, self.index_path)
            index_file = self.index_path
        self.table = dataset.data.table  # pyarrow Table over memory-mapped Arrow files
        # Row lookups go chunk by chunk over zero-copy views: `ChunkedArray.take` would copy whole
        # columns on every call (hundreds of MB for a large knowledge base, private to each process).
        lengths = [len(c) for c in self.table.column("text").chunks]
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._emb = [c.flatten().to_numpy(zero_copy_only=False).reshape(-1, self.manifest.dim)
                     for c in self.table.column("embeddings").chunks]
        if self.table.num_rows != self.manifest.n_passages:
            raise RayragError(
                f"{self.path / PASSAGES_DIR}: {self.table.num_rows} passages where the manifest records "
                f"{self.manifest.n_passages}; rebuild the knowledge base with `rayrag index`")
        self.index: faiss.Index | None = None
        self._index_vectors: np.ndarray | None = None
        if load_index:
            if self.index_path is None:
                self.index = faiss_index.load_index(index_file, self.manifest.index_params, mmap=mmap)
                if self.index.ntotal != self.manifest.n_passages or self.index.d != self.manifest.dim:
                    raise RayragError(
                        f"{index_file}: {self.index.ntotal} vectors of size {self.index.d} where "
                        f"the manifest records {self.manifest.n_passages} of size {self.manifest.dim}; "
                        "rebuild the knowledge base with `rayrag index`")
            else:
                self.index = faiss_index.load_index(index_file, {}, mmap=mmap, fix="give the FAISS file that "
                                                    "dataset.get_index(\"embeddings\").save wrote")
                reference.check_index(self.index, self.manifest, self.path, index_file)
                self.manifest.index_type, self.manifest.index_params = faiss_index.describe(self.index)
            # A flat index holds the same float32 vectors as the Arrow column: reading them from the index,
            # whose pages every search touches anyway (and processes on a node share), keeps the lookups
            # from faulting in a second copy through the Arrow files (measured: +208 MiB across 4 actors).
            self._index_vectors = faiss_index.stored_vectors(self.index)
        log.info("opened knowledge base %s: %d passages, %s index, %.2f s", self.where,
                 self.manifest.n_passages, self.manifest.index_type, time.perf_counter() - t0)

    @property
    def where(self) -> str:
        """The knowledge base's path(s), for messages."""
        return str(self.path) if self.index_path is None else f"{self.path} (index {self.index_path})"

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def __len__(self) -> int:
        return self.manifest.n_passages

    def check_k(self, k: int, flag: str = "--n_docs") -> None:
        check_k(k, len(self), self.where, flag)

    def _locate(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chunk number, row within chunk) of each passage id."""
        chunk = np.searchsorted(self._starts, flat, side="right") - 1
        return chunk, flat - self._starts[chunk]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored passage vectors for `ids` of any shape S, as float32 (*S, d)."""
        flat = np.asarray(ids, dtype=np.int64).ravel()
        if self._index_vectors is not None:
            return self._index_vectors[flat].reshape(*np.shape(ids), self.dim)
        out = np.empty((flat.size, self.dim), dtype=np.float32)
        chunk, row = self._locate(flat)
        for c in np.unique(chunk):
            sel = chunk == c
            out[sel] = self._emb[c][row[sel]]
        return out.reshape(*np.shape(ids), self.dim)

    def _strings(self, name: str, flat: np.ndarray) -> list[str]:
        column = self.table.column(name)
        out: list[str] = [""] * flat.size
        chunk, row = self._locate(flat)
        for c in np.unique(chunk):
            where = np.flatnonzero(chunk == c)
            for i, value in zip(where, column.chunk(int(c)).take(row[where]).to_pylist()):
                out[i] = value
        return out

    def texts(self, ids: np.ndarray) -> tuple[list[list[str]], list[list[str]]]:
        """Titles and texts [B][k] of the passages `ids` (B, k): the look-up that needs no index."""
        ids = np.asarray(ids, dtype=np.int64)
        titles, texts = self._strings("title", ids.ravel()), self._strings("text", ids.ravel())
        b, k = ids.shape
        return [titles[i * k:(i + 1) * k] for i in range(b)], [texts[i * k:(i + 1) * k] for i in range(b)]

    def fingerprint(self) -> str:
        """A short digest of the passage count, vector size and a few passages (first, middle, last): two
        processes that compute the same one read the same passages, whatever path or node they read them on."""
        import hashlib

        n = len(self)
        titles, texts = self.texts(np.array([[0, n // 2, n - 1]], dtype=np.int64))
        text = "\x1f".join([str(n), str(self.dim), *titles[0], *texts[0]])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def passages(self, ids: np.ndarray) -> Passages:
        """Vectors, titles and texts of the passages `ids` (B, k)."""
        ids = np.asarray(ids, dtype=np.int64)
        titles, texts = self.texts(ids)
        return Passages(ids=ids, vectors=self.vectors(ids), titles=titles, texts=texts)

    def exact_search(self, queries: np.ndarray, k: int, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force search over the stored vectors; the fallback when an index returns too few hits."""
        best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        best_i = np.zeros((len(queries), 0), dtype=np.int64)
        for start in range(0, len(self), block):
            ids = np.arange(start, min(start + block, len(self)))
            scores = queries @ self.vectors(ids).T
            best_s = np.concatenate([best_s, scores], axis=1)
            best_i = np.concatenate([best_i, np.broadcast_to(ids, scores.shape)], axis=1)
            order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
            best_s = np.take_along_axis(best_s, order, 1)
            best_i = np.take_along_axis(best_i, order, 1)
        return best_s, best_i
