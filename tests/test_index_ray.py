"""`rayrag index --ray`: embedding by a Ray Data pool of encoder actors equals the single-process build, resumes an
interrupted build from its shards, runs on a multi-node cluster (`ray.cluster_utils.Cluster` on this machine), and
refuses a pool the cluster cannot hold instead of waiting for it forever.

The encoder is the packaged MiniLM (a real, reproducible checkpoint; `--encoder tiny` trains its tokenizer anew in
every process), on a small synthetic corpus with short passages."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import rayrag, three_node_cluster
from rayrag.cluster import workers_that_fit
from rayrag.kb.ray_embed import shard_dir, shard_rows

ARGS = ["--encoder", "minilm", "--passage_words", "12", "--max_length", "48", "--batch_size", "16"]
MANIFEST_KEYS = ("encoder", "dim", "n_passages", "index_type", "pooling", "passage_words", "n_documents")


def _read(kb: Path) -> tuple[dict, list[str], list[str], np.ndarray]:
    from datasets import load_from_disk

    manifest = json.loads((kb / "manifest.json").read_text())
    ds = load_from_disk(str(kb / "passages"))
    return manifest, ds["title"], ds["text"], np.asarray(ds.with_format("numpy")["embeddings"], dtype=np.float32)


def assert_same_kb(kb: Path, plain: Path) -> None:
    """Same manifest (but the checksums), same passages in the same order, vectors within 1e-5."""
    m, titles, texts, vectors = _read(kb)
    m0, titles0, texts0, vectors0 = _read(plain)
    assert {k: m.get(k) for k in MANIFEST_KEYS} == {k: m0.get(k) for k in MANIFEST_KEYS}
    assert titles == titles0 and texts == texts0
    assert vectors.shape == vectors0.shape
    assert np.abs(vectors - vectors0).max() <= 1e-5
    from rayrag.kb.store import KnowledgeBase

    KnowledgeBase(kb)  # the manifest's checksums hold and the index has every passage


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    from rayrag.tasks.synthetic import make_corpus, write_corpus

    d = tmp_path_factory.mktemp("ray_index_corpus")
    write_corpus(make_corpus(60, seed=3), d / "documents.jsonl", d / "data")
    return d / "documents.jsonl"


@pytest.fixture(scope="module")
def plain_kb(docs, tmp_path_factory) -> Path:
    """The single-process build (`build`, the function behind `rayrag index`), in this process."""
    from rayrag.kb.build import build

    out = tmp_path_factory.mktemp("plain") / "kb"
    build([docs], out, encoder="minilm", passage_words=12, max_length=48, batch_size=16, progress=False)
    return out


def _embedded(stdout: str) -> tuple[int, int]:
    """(passages embedded now, passages taken from an interrupted run's shards) from the CLI's report."""
    m = re.search(r"embedded (\d+) passages with \d+ Ray worker", stdout)
    assert m, stdout
    r = re.search(r"(\d+) taken from the shards of an interrupted run", stdout)
    return int(m.group(1)), int(r.group(1)) if r else 0


# ---------------------------------------------------------------- fast: the arithmetic of fitting and sharding

def test_workers_that_fit_counts_node_by_node():
    nodes = [{"CPU": 0.0}, {"CPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]
    assert workers_that_fit(nodes, 1.0, 0.0) == 2
    assert workers_that_fit(nodes, 0.75, 0.0) == 2  # 0.75 + 0.75 does not fit in one CPU
    assert workers_that_fit(nodes, 0.5, 0.0) == 4
    assert workers_that_fit(nodes, 0.5, 1.0) == 1  # one node has a GPU
    assert workers_that_fit([{"CPU": 2.0}], 1 / 3, 0.0) == 6  # no float round-off loses a worker


def test_shards_give_every_worker_work_and_stay_bounded():
    assert shard_rows(100, 2, 16) == 16  # at least one encoder batch
    assert shard_rows(1000, 2, 16) == 125  # 4 shards per worker
    assert shard_rows(21_000_000, 8, 64) == 4096


@pytest.mark.parametrize("ray, cluster, message", [
    (False, {"workers": 2}, "--cluster.workers applies to --ray"),
    (False, {"address": "auto"}, "--cluster.address applies to --ray"),
    (True, {"workers": 0}, "--cluster.workers 0: must be at least 1"),
    (True, {"cpus_per_worker": 0.0}, "--cluster.cpus_per_worker 0.0: must be more than 0"),
    (True, {"address": "somewhere"}, "--cluster.address 'somewhere'"),
])
def test_ray_flags_are_checked(ray, cluster, message):
    from rayrag.cluster.args import ClusterArgs
    from rayrag.errors import RayragError
    from rayrag.kb.options import IndexOptions

    with pytest.raises(RayragError, match=re.escape(message)):
        IndexOptions(out=Path("kb"), docs=[Path("d.jsonl")], ray=ray, cluster=ClusterArgs(**cluster)).validate()
    resolved = IndexOptions(out=Path("kb"), docs=[Path("d.jsonl")], ray=True).resolved()
    assert (resolved.cluster.workers, resolved.cluster.cpus_per_worker) == (1, 1.0)


# ---------------------------------------------------------------- slow: the real pipeline

# A Cluster started here runs without authentication; rayrag turns token mode on by itself when ~/.ray/auth_token
# exists (rayrag/cluster/auth.py), and a token-mode driver refuses the cluster's calls back to it ("Missing
# authorization header"), which Ray Data's actors make: the client must match the cluster, as the README says.
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def cluster():
    """Three Ray nodes on this machine: a head with no CPUs (the driver's) and two workers of one logical CPU."""
    with three_node_cluster() as c:
        yield c


@pytest.mark.slow
def test_a_killed_build_resumes_on_a_three_node_cluster_and_equals_the_plain_build(docs, plain_kb, cluster, tmp_path):
    """Killed (SIGKILL) on a local Ray instance once its first shard is written; rerun on the cluster with fractional
    requests, 0.75 CPU each, so that the two actors must run on the two worker nodes. The rerun embeds only what the
    shards lack, and the knowledge base equals the single-process build's."""
    out = tmp_path / "kb"
    log = tmp_path / "killed.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "rayrag", "index", "--docs", str(docs), "--out", str(out),
                                 *ARGS, "--ray", "--num_workers", "1", "--quiet"], stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 180
        shards = shard_dir(out)
        while not list(shards.glob("shard-*.npz")):  # the first finished shard: the run is mid-way
            assert proc.poll() is None, f"exited {proc.returncode} before writing a shard\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no shard after 180 s\n{log.read_text()[-4000:]}"
            with contextlib.suppress(psutil.Error):
                seen.update((p.pid, p) for p in psutil.Process(proc.pid).children(recursive=True))
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no cleanup runs
    finally:
        for p in [*seen.values()]:  # the Ray instance it started, its actor included
            with contextlib.suppress(psutil.Error):
                p.kill()
        proc.wait(timeout=30)
    assert not out.exists()
    n = json.loads((shard_dir(out) / "job.json").read_text())["passages"]
    kept = sum(len(np.load(p)["ids"]) for p in shard_dir(out).glob("shard-*.npz"))
    assert 0 < kept < n

    rerun = rayrag("index", "--docs", docs, "--out", out, *ARGS, "--ray", "--num_workers", "2", "--cpus_per_worker",
                   "0.75", "--ray_address", cluster.address, "--quiet", timeout=300, env=CLUSTER_ENV)
    embedded, resumed = _embedded(rerun.stdout)
    assert resumed == kept and embedded == n - kept, rerun.stdout
    assert_same_kb(out, plain_kb)
    assert not shard_dir(out).exists()  # removed once the knowledge base is written


@pytest.mark.slow
def test_a_pool_the_cluster_cannot_hold_is_refused_with_the_fix(cluster, docs, tmp_path):
    t0 = time.monotonic()
    run = rayrag("index", "--docs", docs, "--out", tmp_path / "kb", *ARGS, "--ray", "--num_workers", "3",
                 "--cpus_per_worker", "0.75", "--ray_address", cluster.address, check=False, timeout=180,
                 env=CLUSTER_ENV)
    assert run.returncode == 2, run.stderr[-3000:]
    error = run.stderr.strip().splitlines()[-1]
    assert "--cluster.workers 3: the Ray cluster at" in error and "room for 2" in error, error
    assert "lower --cluster.workers to 2" in error and "--cluster.cpus_per_worker 0.5" in error, error
    assert time.monotonic() - t0 < 120  # refused, not left waiting for CPUs
    assert not (tmp_path / "kb").exists() and not shard_dir(tmp_path / "kb").exists()
