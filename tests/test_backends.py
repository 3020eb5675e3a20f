"""The three retrieval backends (local, pytorch, ray) agree exactly, and the Ray pool survives its actors
dying or hanging. Real Ray (a local instance started here), real gloo process groups on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from _fixtures_backends import build_tie_kb, child_env, expected_top_k, free_port, tie_queries

HERE = Path(__file__).parent
K = 4


@pytest.fixture(scope="module")
def tie_kb(tmp_path_factory):
    """(kb_dir, passage vectors (90, 16)) of a flat knowledge base full of exact ties."""
    out = tmp_path_factory.mktemp("tiekb") / "kb"
    return out, build_tie_kb(out)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance in this test process, shut down after the module."""
    import ray

    ray.init(address="local", include_dashboard=False, num_cpus=2, namespace="rayrag", logging_level="WARNING",
             log_to_driver=False)
    yield ray
    ray.shutdown()


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.texts == b.texts and a.titles == b.titles


def test_local_backend_orders_ties_by_id(tie_kb):
    from rayrag.retrieval.local import LocalBackend

    kb, vectors = tie_kb
    q = tie_queries(vectors, 12, seed=1)
    r = LocalBackend(kb).retrieve(q, K)
    np.testing.assert_array_equal(r.ids, expected_top_k(vectors, q, K))
    np.testing.assert_array_equal(r.vectors, vectors[r.ids])
    # the stored vector queries really tie: three equal top scores
    assert (r.scores[::2, 0] == r.scores[::2, 2]).all()


def test_pytorch_world_size_one_is_local(tie_kb):
    from rayrag.retrieval.local import LocalBackend
    from rayrag.retrieval.pytorch import TorchDistributedBackend

    kb, vectors = tie_kb
    q = tie_queries(vectors, 20, seed=2)  # more than one FAISS sub-batch of 8
    backend = TorchDistributedBackend(kb)
    assert backend.world == 1 and backend.group is None
    _same(backend.retrieve(q, K), LocalBackend(kb).retrieve(q, K))
    backend.close()


def test_pytorch_two_ranks_uneven_batches_match_local(tie_kb, tmp_path):
    """Two gloo ranks with different batch sizes (5 and 3, then 2 and 0) get exactly the local results."""
    from rayrag.retrieval.local import LocalBackend

    kb, vectors = tie_kb
    sizes = {0: [5, 2], 1: [3, 0]}
    queries = {f"rank{r}_call{c}": tie_queries(vectors, n, seed=10 * r + c)
               for r, ns in sizes.items() for c, n in enumerate(ns)}
    np.savez(tmp_path / "q.npz", k=K, **queries)
    port = free_port()
    procs = [subprocess.Popen([sys.executable, str(HERE / "_pytorch_worker.py"), str(r), "2", str(port), str(kb),
                               str(tmp_path / "q.npz"), str(tmp_path / f"out{r}.npz")], env=child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    try:
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs
    local = LocalBackend(kb)
    for r, ns in sizes.items():
        got = np.load(tmp_path / f"out{r}.npz")
        assert int(got["backend_rank"]) == r
        for c, n in enumerate(ns):
            want = local.retrieve(queries[f"rank{r}_call{c}"], K)
            assert got[f"ids{c}"].shape == (n, K)
            np.testing.assert_array_equal(got[f"ids{c}"], want.ids)
            np.testing.assert_array_equal(got[f"ids{c}"], expected_top_k(vectors, queries[f"rank{r}_call{c}"], K))
            np.testing.assert_array_equal(got[f"scores{c}"], want.scores)
            np.testing.assert_array_equal(got[f"vectors{c}"], want.vectors)
            assert json.loads(str(got[f"texts{c}"])) == want.texts


@pytest.mark.parametrize("policy", ["rayrag", "reference"])
def test_ray_pool_matches_local(tie_kb, ray_local, policy):
    from rayrag.retrieval.factory import make_backend
    from rayrag.retrieval.local import LocalBackend

    kb, vectors = tie_kb
    local = LocalBackend(kb)
    backend = make_backend("ray", kb, num_workers=2, policy=policy)
    try:
        assert backend.connection.connected is False  # joined this test's Ray, will not shut it down
        for seed, n in [(3, 8), (4, 19), (5, 0)]:
            q = tie_queries(vectors, n, seed)
            _same(backend.retrieve(q, K), local.retrieve(q, K))
            scores, ids = backend.search(q, K)
            np.testing.assert_array_equal(ids, expected_top_k(vectors, q, K))
        if policy == "reference":  # random actor choice: both actors served calls
            for _ in range(20):
                backend.retrieve(tie_queries(vectors, 2, 6), K)
            assert all(s["calls"] > 0 for s in backend.stats())
        else:  # pinned: rank 0 always uses actor 0
            assert [s["calls"] for s in backend.stats()] == [6, 0]
    finally:
        backend.close()
    with pytest.raises(ValueError):  # the actors are gone: killed by close()
        ray_local.get_actor(backend.pool.spec.actor_name(0), namespace="rayrag")


def test_concurrent_calls_from_many_threads(tie_kb, ray_local):
    """Four client threads pinned to one actor at once: every call gets its own exact rows back
    (merged searches are split correctly)."""
    from rayrag.retrieval.ray_pool import RayBackend

    kb, vectors = tie_kb
    owner = RayBackend.start(kb, 1)
    clients = [RayBackend(owner.pool, rank=r) for r in range(4)]
    errors, done = [], []

    def run(client, seed):
        try:
            for i in range(15):
                q = tie_queries(vectors, 3 + (seed + i) % 5, seed * 100 + i)
                np.testing.assert_array_equal(client.retrieve(q, K).ids, expected_top_k(vectors, q, K))
            done.append(seed)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c, s)) for s, c in enumerate(clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert sorted(done) == [0, 1, 2, 3]
        stats = owner.stats()[0]
        assert stats["calls"] == 60 and sum(n * c for n, c in stats["sizes"].items()) == 60
    finally:
        owner.close()


def _wait_restarted(backend, old_pid: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = backend.actor_pids()[0]
            if pid != old_pid:
                return pid
        except Exception:  # restarting
            pass
        time.sleep(0.5)
    raise AssertionError("actor was not restarted")


def test_actor_killed_during_call_same_ids(tie_kb, ray_local):
    """SIGKILL of the actor that holds a call in flight: the call is re-sent to the other actor and
    returns the same ids, well before the call timeout; Ray restarts the killed actor."""
    from rayrag.retrieval.ray_pool import PoolConfig, RayBackend

    kb, vectors = tie_kb
    config = PoolConfig(call_timeout_s=60, suspect_s=1.0)
    backend = RayBackend.start(kb, 2, config=config)
    q = tie_queries(vectors, 8, seed=11)
    want = expected_top_k(vectors, q, K)
    pid0 = backend.actor_pids()[0]  # rank 0 is pinned to actor 0
    result, box = {}, {}
    try:
        os.kill(pid0, signal.SIGSTOP)  # hold the call inside actor 0 ...
        t = threading.Thread(target=lambda: result.update(r=backend.retrieve(q, K), t=time.monotonic()))
        t0 = time.monotonic()
        t.start()
        time.sleep(1.0)
        assert t.is_alive()  # ... the call is in flight
        os.kill(pid0, signal.SIGKILL)  # ... and kill the actor under it
        t.join(timeout=50)
        assert not t.is_alive()
        np.testing.assert_array_equal(result["r"].ids, want)
        assert result["t"] - t0 < config.call_timeout_s / 2  # answered after the death, not a timeout
        assert backend.retries >= 1
        box["pid"] = _wait_restarted(backend, pid0)
        time.sleep(config.suspect_s)
        np.testing.assert_array_equal(backend.retrieve(q, K).ids, want)
        calls_after = backend.stats()[0]["calls"]
        assert calls_after >= 1  # the restarted actor 0 serves again
    finally:
        backend.close()


def test_single_actor_killed_during_call_is_waited_for_while_it_restarts(tie_kb, ray_local):
    """One actor, killed under a call, with a restart left: the call waits for the restart (tries that find the
    actor restarting do not count against max_attempts) instead of spending its 2 tries in a fraction of a
    second, and gets the right ids from the restarted actor."""
    from rayrag.retrieval.ray_pool import PoolConfig, RayBackend

    kb, vectors = tie_kb
    backend = RayBackend.start(kb, 1, config=PoolConfig(call_timeout_s=60, max_restarts=1, max_attempts=2,
                                                        retry_backoff_s=0.01))
    q = tie_queries(vectors, 4, seed=15)
    pid = backend.actor_pids()[0]
    box: dict = {}

    def call():
        try:
            box["ids"] = backend.retrieve(q, K).ids
        except Exception as e:  # reported below
            box["error"] = e

    try:
        os.kill(pid, signal.SIGSTOP)  # hold the call inside the actor ...
        t = threading.Thread(target=call)
        t.start()
        time.sleep(1.0)
        assert t.is_alive()
        os.kill(pid, signal.SIGKILL)  # ... and kill it under the call
        t.join(timeout=60)
        assert not t.is_alive() and "error" not in box, box
        np.testing.assert_array_equal(box["ids"], expected_top_k(vectors, q, K))
        assert backend.retries >= 1 and _wait_restarted(backend, pid) != pid
    finally:
        backend.close()


def test_hung_actor_call_times_out_and_is_resent(tie_kb, ray_local):
    from rayrag.retrieval.ray_pool import PoolConfig, RayBackend

    kb, vectors = tie_kb
    backend = RayBackend.start(kb, 2, config=PoolConfig(call_timeout_s=2.0, suspect_s=30.0))
    q = tie_queries(vectors, 6, seed=12)
    pid0 = backend.actor_pids()[0]
    try:
        os.kill(pid0, signal.SIGSTOP)
        t0 = time.monotonic()
        r = backend.retrieve(q, K)
        elapsed = time.monotonic() - t0
        np.testing.assert_array_equal(r.ids, expected_top_k(vectors, q, K))
        assert 2.0 <= elapsed < 20 and backend.retries == 1
        t0 = time.monotonic()
        backend.retrieve(q, K)  # the hung actor is passed over now: no second timeout
        assert time.monotonic() - t0 < 2.0
    finally:
        os.kill(pid0, signal.SIGCONT)
        backend.close()


def test_retries_exhausted_raise_retrieval_error(tie_kb, ray_local):
    from rayrag.errors import RetrievalError
    from rayrag.retrieval.ray_pool import PoolConfig, RayBackend

    kb, vectors = tie_kb
    backend = RayBackend.start(kb, 1, config=PoolConfig(call_timeout_s=5.0, max_restarts=0, max_attempts=3,
                                                        retry_backoff_s=0.1))
    try:
        os.kill(backend.actor_pids()[0], signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(RetrievalError, match=r"retrieval failed after 3 tries on the 1 actors of pool rayrag-"):
            backend.retrieve(tie_queries(vectors, 2, seed=13), K)
        assert time.monotonic() - t0 < 3 * 5.0 + 5
    finally:
        backend.close()


def test_attach_by_name_from_another_process(tie_kb, ray_local, tmp_path):
    """A process that did not create the pool finds it through RAYRAG_RAY_POOL (as DDP ranks do)."""
    from rayrag.retrieval.ray_pool import POOL_ENV, RayBackend

    kb, vectors = tie_kb
    owner = RayBackend.start(kb, 2)
    q = tie_queries(vectors, 5, seed=14)
    np.save(tmp_path / "q.npy", q)
    code = ("import numpy as np, sys; from rayrag.retrieval.factory import make_backend; "
            f"b = make_backend('ray', {str(kb)!r}); r = b.retrieve(np.load({str(tmp_path / 'q.npy')!r}), {K}); "
            f"np.save({str(tmp_path / 'ids.npy')!r}, r.ids); print(b.rank, b.owns_pool); b.close()")
    try:
        env = child_env(**{POOL_ENV: owner.pool.spec.to_json()})
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.split()[-2:] == ["0", "False"]
        np.testing.assert_array_equal(np.load(tmp_path / "ids.npy"), expected_top_k(vectors, q, K))
        assert owner.stats()[0]["calls"] == 1  # served by the pool, not by a pool of its own
        np.testing.assert_array_equal(owner.retrieve(q, K).ids, expected_top_k(vectors, q, K))
    finally:
        owner.close()


def test_train_options_retrieval_flags(tmp_path):
    from rayrag.errors import RayragError
    from rayrag.train.options import TrainOptions

    def opts(**kw):
        return TrainOptions(data_dir=tmp_path, output_dir=tmp_path / "o", model_name_or_path=tmp_path, do_train=True,
                            **kw)

    with pytest.raises(RayragError, match="--num_retrieval_workers applies to --distributed_retriever ray"):
        opts(distributed_retriever="pytorch", num_retrieval_workers=2).validate()
    with pytest.raises(RayragError, match="--ray_address 'somewhere'"):
        opts(distributed_retriever="ray", ray_address="somewhere").validate()
    for address in ("auto", "local", "10.0.0.1:6379", "ray://head:10001"):
        opts(distributed_retriever="ray", num_retrieval_workers=4, ray_address=address).validate()


def test_coalescer_merges_requests_that_wait_together():
    """While one batch runs, requests that arrive are merged into the next batch, each gets its own result,
    and an error of a batch reaches every request of that batch."""
    from rayrag.retrieval.coalesce import Coalescer

    release = threading.Event()
    batches: list[list[int]] = []

    def run_batch(key, payloads):
        batches.append(list(payloads))
        if len(batches) == 1:
            release.wait(timeout=30)
        if -1 in payloads:
            raise KeyError("bad payload")
        return [p * 10 + key for p in payloads]

    c = Coalescer(run_batch)
    results: dict[int, object] = {}

    def submit(p, key=1):
        try:
            results[p] = c.submit(key, p)
        except KeyError as e:
            results[p] = e

    first = threading.Thread(target=submit, args=(1,))
    first.start()
    while not batches:
        time.sleep(0.01)
    others = [threading.Thread(target=submit, args=(p,)) for p in (2, 3)]
    others.append(threading.Thread(target=submit, args=(4, 2)))  # another key: a batch of its own
    for t in others:
        t.start()
    while c.stats.requests < 4:
        time.sleep(0.01)
    release.set()
    for t in [first, *others]:
        t.join(timeout=30)
    assert results == {1: 11, 2: 21, 3: 31, 4: 42}
    assert batches[0] == [1] and sorted(map(sorted, batches[1:])) == [[2, 3], [4]]
    assert c.stats.requests == 4 and c.stats.batches == 3 and c.stats.largest == 2
    threads = [threading.Thread(target=submit, args=(p,)) for p in (-1,)]
    for t in threads:
        t.start()
        t.join(timeout=30)
    assert isinstance(results[-1], KeyError)


def test_unreachable_ray_address_fails_fast_with_the_fix():
    port = free_port()  # nothing listens there
    code = ("from rayrag.retrieval.ray_connect import connect\n"
            f"connect('127.0.0.1:{port}', namespace='rayrag')")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"RetrievalError: --ray_address 127.0.0.1:{port}: no Ray cluster answers there" in proc.stderr
    assert "ray start --head" in proc.stderr
    assert time.monotonic() - t0 < 60


def test_pool_over_missing_kb_names_the_cause(ray_local, tmp_path):
    from rayrag.errors import RetrievalError
    from rayrag.retrieval.ray_pool import PoolConfig, RayBackend

    with pytest.raises(RetrievalError, match=r"retrieval actors over .*did not start: ActorDiedError: "
                                             r"rayrag.errors.RayragError: .*no such knowledge base directory"):
        RayBackend.start(tmp_path / "missing", 2, config=PoolConfig(ready_timeout_s=120))
