"""Knowledge base round trip, index types, and damaged knowledge bases."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rayrag.errors import RayragError
from rayrag.kb.build import write_knowledge_base
from rayrag.kb.faiss_index import IndexParams, stored_vectors
from rayrag.kb.store import KnowledgeBase
from rayrag.retrieval.search import REFERENCE, search


def _vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _kb(tmp_path, n=300, d=16, index_type="flat", params=None, name="kb", normalize=False):
    vecs = _vectors(n, d)
    if normalize:  # unit vectors: each vector's best inner-product match is itself
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    write_knowledge_base(tmp_path / name, [f"T{i}" for i in range(n)], [f"text {i}" for i in range(n)], vecs,
                         encoder="test", index_type=index_type, params=params)
    return tmp_path / name, vecs


def test_round_trip_returns_the_ids_of_an_exact_search(tmp_path):
    kb_dir, vecs = _kb(tmp_path)
    kb = KnowledgeBase(kb_dir)
    queries = _vectors(7, 16, seed=1)
    scores, ids = search(kb, queries, 5)
    exact = np.argsort(-(queries @ vecs.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ids, exact)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vecs.T, exact, 1), rtol=1e-5)
    passages = kb.passages(ids)
    np.testing.assert_array_equal(passages.vectors, vecs[ids])
    assert passages.titles[0] == [f"T{i}" for i in ids[0]] and passages.texts[2][1] == f"text {ids[2, 1]}"
    # the reference's search path (sub-batches of 8, FAISS defaults) gives the same ids
    np.testing.assert_array_equal(search(kb, queries, 5, REFERENCE)[1], ids)


def test_exact_ties_are_broken_by_id(tmp_path):
    vecs = np.repeat(_vectors(4, 8), 3, axis=0)  # every vector three times: exact ties
    write_knowledge_base(tmp_path / "kb", ["t"] * 12, ["x"] * 12, vecs, encoder="test")
    kb = KnowledgeBase(tmp_path / "kb")
    _, ids = search(kb, vecs[[0, 3]], 3)
    np.testing.assert_array_equal(ids, [[0, 1, 2], [3, 4, 5]])


@pytest.mark.parametrize("index_type,params", [
    ("hnsw", IndexParams(hnsw_m=8, hnsw_ef_search=64)),
    ("ivfpq", IndexParams(ivf_nlist=4, pq_m=4, ivf_nprobe=4)),
])
def test_approximate_indexes_round_trip(tmp_path, index_type, params):
    kb_dir, vecs = _kb(tmp_path, n=2000, index_type=index_type, params=params, normalize=True)
    kb = KnowledgeBase(kb_dir)
    assert kb.manifest.index_type == index_type
    queries = vecs[:20] + 0.01 * _vectors(20, 16, seed=3)
    scores, ids = search(kb, queries, 5)
    assert (ids >= 0).all() and ids.shape == (20, 5)
    assert (ids[:, 0] == np.arange(20)).mean() >= 0.9  # each query's own passage comes first
    np.testing.assert_array_equal(kb.passages(ids).vectors, vecs[ids])
    assert (stored_vectors(kb.index) is None) == (index_type == "ivfpq")  # ivfpq keeps codes only


def test_vectors_are_read_from_the_memory_mapped_flat_index(tmp_path):
    kb_dir, vecs = _kb(tmp_path)
    kb = KnowledgeBase(kb_dir)
    view = stored_vectors(kb.index)
    np.testing.assert_array_equal(view, vecs)
    address = view.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        spans = [[int(x, 16) for x in line.split()[0].split("-")] for line in f
                 if line.rstrip().endswith(str((kb_dir / "index.faiss").resolve()))]
    assert any(lo <= address < hi for lo, hi in spans)  # the index file's pages, which processes share
    np.testing.assert_array_equal(kb.vectors(np.array([[3, 1], [299, 0]])), vecs[[[3, 1], [299, 0]]])


def test_too_few_hits_are_filled_exactly_never_minus_one(tmp_path):
    kb_dir, vecs = _kb(tmp_path, n=2000, index_type="ivfpq", params=IndexParams(ivf_nlist=40, pq_m=4, ivf_nprobe=1))
    kb = KnowledgeBase(kb_dir)
    raw = kb.index.search(vecs[:50], 100)[1]
    assert (raw < 0).any(), "one probed cell of 40 should hold fewer than 100 vectors"
    _, ids = search(kb, vecs[:50], 100)
    assert (ids >= 0).all()
    assert all(len(set(row)) == 100 for row in ids.tolist())
    with pytest.raises(RayragError, match="--n_docs 2001: must be between 1 and the 2000 passages"):
        kb.check_k(2001)


def test_existing_directory_is_kept_unless_overwrite(tmp_path):
    kb_dir, _ = _kb(tmp_path)
    with pytest.raises(RayragError, match="already exists; pass --overwrite"):
        _kb(tmp_path)
    assert KnowledgeBase(kb_dir).manifest.n_passages == 300
    assert [p.name for p in tmp_path.iterdir()] == ["kb"]  # no temporary directory left behind


def test_truncated_index_names_the_path(tmp_path):
    kb_dir, _ = _kb(tmp_path)
    index = kb_dir / "index.faiss"
    index.write_bytes(index.read_bytes()[:1000])
    with pytest.raises(RayragError, match=r"index\.faiss: 1000 bytes where the manifest records .*rayrag index"):
        KnowledgeBase(kb_dir)


def test_corrupted_passages_names_the_path(tmp_path):
    kb_dir, _ = _kb(tmp_path)
    arrow = next((kb_dir / "passages").glob("*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrow.write_bytes(bytes(data))
    with pytest.raises(RayragError, match=r"\.arrow: checksum differs from the manifest \(corrupted\)"):
        KnowledgeBase(kb_dir)


def test_bad_manifests(tmp_path):
    kb_dir, _ = _kb(tmp_path)
    manifest = kb_dir / "manifest.json"
    good = manifest.read_text()
    manifest.write_text(good[:50])
    with pytest.raises(RayragError, match=r"manifest\.json: damaged manifest"):
        KnowledgeBase(kb_dir)
    data = json.loads(good)
    data["n_passages"] = 299
    data["files"] = {k: v for k, v in data["files"].items()}
    manifest.write_text(json.dumps(data))
    with pytest.raises(RayragError, match="300 passages where the manifest records 299"):
        KnowledgeBase(kb_dir)
    manifest.unlink()
    with pytest.raises(RayragError, match="manifest.json: missing, so .* is not a knowledge base"):
        KnowledgeBase(kb_dir)
    shutil.rmtree(kb_dir)
    with pytest.raises(RayragError, match="no such knowledge base directory"):
        KnowledgeBase(kb_dir)


def test_index_file_from_another_knowledge_base_is_refused(tmp_path):
    kb_a, _ = _kb(tmp_path, name="a")
    kb_b, _ = _kb(tmp_path, n=301, name="b")
    # same-size swap is caught by the checksum; a consistent manifest with a foreign index by the count check
    shutil.copy(kb_b / "index.faiss", kb_a / "index.faiss")
    data = json.loads((kb_a / "manifest.json").read_text())
    from rayrag.kb.manifest import file_digest

    data["files"]["index.faiss"] = {"bytes": (kb_a / "index.faiss").stat().st_size,
                                    "sha256": file_digest(kb_a / "index.faiss")}
    (kb_a / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(RayragError, match=r"index\.faiss: 301 vectors of size 16 where the manifest records 300"):
        KnowledgeBase(kb_a)
