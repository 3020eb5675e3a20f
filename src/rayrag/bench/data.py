"""Synthetic benchmark data: clustered unit vectors with short passage texts, and seeded queries.

Vectors are drawn around `clusters` random centres so that approximate indexes (IVF, HNSW)
have structure to exploit; queries are drawn around the same centres. Rank r at step s always
asks the same queries, whatever the backend or the number of training processes, so every
backend's ids can be checked against the local backend's.
"""

from __future__ import annotations

import numpy as np

SPREAD = 0.5
"""Noise around a centre, relative to the centre's norm (both are Gaussian in d dimensions)."""

_WORDS = ("river", "stone", "market", "harbour", "winter", "lantern", "orchard", "bridge", "signal",
          "meadow", "archive", "engine", "canyon", "ledger", "comet", "garden")


def centres(seed: int, clusters: int, dim: int) -> np.ndarray:
    """The cluster centres (clusters, dim) float32 of seed `seed`."""
    return np.random.default_rng([seed, 1]).standard_normal((clusters, dim), dtype=np.float32)


def passage_vectors(seed: int, n: int, clusters: int, dim: int, block: int = 65536) -> np.ndarray:
    """`n` unit vectors (n, dim) float32, each a random centre plus noise."""
    c = centres(seed, clusters, dim)
    rng = np.random.default_rng([seed, 2])
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        which = rng.integers(0, clusters, stop - start)
        v = c[which] + SPREAD * rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def passage_texts(seed: int, n: int, words: int = 12) -> tuple[list[str], list[str]]:
    """Titles and short texts of `n` passages (a dozen words each)."""
    rng = np.random.default_rng([seed, 3])
    picks = rng.integers(0, len(_WORDS), (n, words))
    vocab = np.array(_WORDS)
    texts = [" ".join(row) for row in vocab[picks]]
    return [f"passage {i}" for i in range(n)], texts


def queries(seed: int, rank: int, step: int, batch: int, centres_: np.ndarray) -> np.ndarray:
    """The `batch` query vectors (batch, dim) float32 that rank `rank` asks at step `step`."""
    rng = np.random.default_rng([seed, 4, rank, step])
    which = rng.integers(0, len(centres_), batch)
    q = centres_[which] + SPREAD * rng.standard_normal((batch, centres_.shape[1]), dtype=np.float32)
    return np.ascontiguousarray(q, dtype=np.float32)
