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




def local(kb):
    from rayrag.retrieval.local import LocalSpec

    return LocalSpec(kb=str(kb)).connect()


def ray_service(kb, size, policy="rayrag", **pool):
    """The pool's service, opened in this test process (which is connected to the test's Ray)."""
    from rayrag.retrieval.options import RetrievalOptions
    from rayrag.retrieval.ray.config import PoolConfig
    from rayrag.retrieval.service import open_service

    return open_service(RetrievalOptions(kb=kb, backend="ray", num_workers=size, policy=policy,
                                         pool=PoolConfig(**pool)))


def wait_until(what: str, check, timeout: float = 60.0):
    """Poll `check()` (a state the code under test sets) until it is truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"no {what} after {timeout:.0f} s")


@pytest.fixture
def hold_dir(tmp_path, monkeypatch):
    """Actors of pools created in this test hold calls while DIR/hold-I exists, after writing DIR/received-I, and
    hold their (re)start while DIR/start-I exists, after writing DIR/starting-I (tests/_holding_actor.py)."""
    from _holding_actor import use_holding_actors

    d = tmp_path / "hold"
    d.mkdir()
    use_holding_actors(d, monkeypatch)
    return d


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.texts == b.texts and a.titles == b.titles


def test_local_backend_orders_ties_by_id(tie_kb):
    kb, vectors = tie_kb
    q = tie_queries(vectors, 12, seed=1)
    r = local(kb).retrieve(q, K)
    np.testing.assert_array_equal(r.ids, expected_top_k(vectors, q, K))
    np.testing.assert_array_equal(r.vectors, vectors[r.ids])
    # the stored vector queries really tie: three equal top scores
    assert (r.scores[::2, 0] == r.scores[::2, 2]).all()


def test_a_retrieval_call_reads_each_stored_vector_once(tie_kb):
    """The call re-ranks the index's candidates by their stored vectors and returns the top k's vectors from that
    same read: one read of the vector store per call, of the candidates only."""
    from rayrag.kb.store import KnowledgeBase
    from rayrag.retrieval.search import retrieve

    kb_dir, vectors = tie_kb
    kb = KnowledgeBase(kb_dir)
    reads = []
    stored = kb.vectors
    kb.vectors = lambda ids: reads.append(np.shape(ids)) or stored(ids)  # a wrapper that counts the reads
    q = tie_queries(vectors, 6, seed=3)
    r = retrieve(kb, q, K)
    assert len(reads) == 1 and reads[0][0] == 6
    np.testing.assert_array_equal(r.vectors, vectors[r.ids])
    _same(r, local(kb_dir).retrieve(q, K))


def test_pytorch_world_size_one_is_local(tie_kb):
    from rayrag.retrieval.pytorch import TorchSpec

    kb, vectors = tie_kb
    q = tie_queries(vectors, 20, seed=2)  # more than one FAISS sub-batch of 8
    client = TorchSpec(kb=str(kb)).connect()
    assert client.world == 1 and client.group is None
    _same(client.retrieve(q, K), local(kb).retrieve(q, K))
    client.close()


def test_specs_travel_as_json_and_search_settings_are_not_left_behind(tie_kb):
    """Every backend's spec survives to_json/load_spec; a search changes no process-wide FAISS setting."""
    import faiss

    from rayrag.retrieval.options import RetrievalOptions
    from rayrag.retrieval.service import load_spec, open_service

    kb, vectors = tie_kb
    q = tie_queries(vectors, 9, seed=21)
    threshold, threads = faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()
    for backend in ("local", "pytorch"):
        service = open_service(RetrievalOptions(kb=kb, backend=backend))
        spec = load_spec(service.spec.to_json())
        assert spec == service.spec and spec.backend == backend
        client = spec.connect()
        r = client.retrieve(q, K)
        np.testing.assert_array_equal(r.ids, expected_top_k(vectors, q, K))
        p = client.passages(r.ids)
        assert p.texts == r.texts and p.titles == r.titles
        np.testing.assert_array_equal(p.vectors, r.vectors)
        client.close()
        service.close()
    assert (faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()) == (threshold, threads)


@pytest.mark.parametrize("backend", ["local", "pytorch"])
def test_the_service_verifies_checksums_once_and_its_clients_check_sizes(tmp_path, backend):
    """The driver's service hashes the files; a client made from its spec checks sizes only, so W ranks do not hash
    the index W times; a spec made by hand (no service) still verifies; a corrupted file stops the service."""
    from rayrag.errors import RayragError
    from rayrag.retrieval.options import RetrievalOptions
    from rayrag.retrieval.service import load_spec, open_service

    kb = tmp_path / "kb"
    build_tie_kb(kb)
    spec = open_service(RetrievalOptions(kb=kb, backend=backend)).spec
    assert spec.verified is True and load_spec(spec.to_json()).verified is True
    index = kb / "index.faiss"
    data = bytearray(index.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    index.write_bytes(bytes(data))
    spec.connect().close()  # sizes only: the service verified it
    unverified = load_spec(spec.to_json().replace('"verified": true', '"verified": false'))
    with pytest.raises(RayragError, match="index.faiss: checksum differs from the manifest"):
        unverified.connect()
    with pytest.raises(RayragError, match="index.faiss: checksum differs from the manifest"):
        open_service(RetrievalOptions(kb=kb, backend=backend))


def test_bad_backend_and_spec_name_the_fix(tie_kb):
    from rayrag.errors import RayragError
    from rayrag.retrieval.options import RetrievalOptions
    from rayrag.retrieval.service import load_spec, open_service

    with pytest.raises(RayragError, match="--distributed_retriever 'faiss': choose one of local, pytorch, ray"):
        open_service(RetrievalOptions(kb=tie_kb[0], backend="faiss"))
    with pytest.raises(RayragError, match="not a rayrag retrieval spec"):
        load_spec("{}")


@pytest.mark.slow
def test_pytorch_two_ranks_uneven_batches_match_local(tie_kb, tmp_path):
    """Two gloo ranks with different batch sizes (5 and 3, then 2 and 0) get exactly the local results."""
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
    client = local(kb)
    for r, ns in sizes.items():
        got = np.load(tmp_path / f"out{r}.npz")
        assert int(got["backend_rank"]) == r
        for c, n in enumerate(ns):
            want = client.retrieve(queries[f"rank{r}_call{c}"], K)
            assert got[f"ids{c}"].shape == (n, K)
            np.testing.assert_array_equal(got[f"ids{c}"], want.ids)
            np.testing.assert_array_equal(got[f"ids{c}"], expected_top_k(vectors, queries[f"rank{r}_call{c}"], K))
            np.testing.assert_array_equal(got[f"scores{c}"], want.scores)
            np.testing.assert_array_equal(got[f"vectors{c}"], want.vectors)
            assert json.loads(str(got[f"texts{c}"])) == want.texts


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["rayrag", "reference"])
def test_ray_pool_matches_local(tie_kb, ray_local, policy):
    kb, vectors = tie_kb
    want = local(kb)
    service = ray_service(kb, 2, policy)
    client = service.spec.connect()
    try:
        assert client.connection.connected is False  # joined this test's Ray, will not shut it down
        for seed, n in [(3, 8), (4, 19), (5, 0)]:
            q = tie_queries(vectors, n, seed)
            _same(client.retrieve(q, K), want.retrieve(q, K))
            scores, ids = client.search(q, K)
            np.testing.assert_array_equal(ids, expected_top_k(vectors, q, K))
        if policy == "reference":  # random actor choice: both actors served calls
            for _ in range(20):
                client.retrieve(tie_queries(vectors, 2, 6), K)
            assert all(s["calls"] > 0 for s in service.stats())
        else:  # pinned: rank 0 always uses actor 0
            assert [s["calls"] for s in service.stats()] == [6, 0]
        client.close()
        assert len(service.pids()) == 2  # a client's close leaves the service's actors alone
    finally:
        service.close()
    with pytest.raises(ValueError):  # the actors are gone: killed by the service's close()
        ray_local.get_actor(f"{service.spec.name}-0", namespace="rayrag")


@pytest.mark.slow
def test_ray_clients_read_texts_themselves_only_from_the_pools_own_passages(tie_kb, ray_local, tmp_path):
    """lookup client: the actor sends scores, ids and vectors, the client reads titles and texts itself;
    actor: the actor sends everything; both equal local. A client whose path holds other passages than the
    actors opened is refused under `client` and falls back to the actors under `auto`."""
    from dataclasses import replace

    from rayrag.errors import RetrievalError
    from rayrag.kb.build import write_knowledge_base

    kb, vectors = tie_kb
    want = local(kb)
    q = tie_queries(vectors, 8, 3)
    service = ray_service(kb, 1, lookup="client")
    try:
        for lookup, reads in [("client", True), ("actor", False), ("auto", True)]:
            client = replace(service.spec, pool={**service.spec.pool, "lookup": lookup}).connect()
            assert (client.reader is not None) is reads
            _same(client.retrieve(q, K), want.retrieve(q, K))
            client.close()
        other = tmp_path / "other"  # the same vectors under other texts
        n = len(vectors)
        write_knowledge_base(other, [f"t{i}" for i in range(n)], [f"other {i}" for i in range(n)], vectors,
                             encoder="test-vectors")
        moved = replace(service.spec, kb=str(other))
        with pytest.raises(RetrievalError, match="--pool.lookup client: the passages at .* differ"):
            replace(moved, pool={**moved.pool, "lookup": "client"}).connect()
        with pytest.raises(RetrievalError, match="is not on this node.*--pool.lookup actor"):
            replace(moved, kb=str(tmp_path / "nowhere"), pool={**moved.pool, "lookup": "client"}).connect()
        client = replace(moved, pool={**moved.pool, "lookup": "auto"}).connect()
        assert client.reader is None
        _same(client.retrieve(q, K), want.retrieve(q, K))  # the actors' passages, not the other directory's
        client.close()
    finally:
        service.close()


@pytest.mark.slow
def test_concurrent_calls_from_many_threads(tie_kb, ray_local):
    """Four client threads pinned to one actor at once: every call gets its own exact rows back
    (merged searches are split correctly)."""
    kb, vectors = tie_kb
    service = ray_service(kb, 1)
    clients = [service.spec.connect(rank=r) for r in range(4)]
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
        stats = service.stats()[0]
        assert stats["calls"] == 60 and sum(n * c for n, c in stats["sizes"].items()) == 60
    finally:
        service.close()


def _restarted(service, old_pid: int) -> int | None:
    try:
        pid = service.pids()[0]
    except Exception:  # restarting
        return None
    return pid if pid != old_pid else None


@pytest.mark.slow
def test_actor_killed_during_call_same_ids(tie_kb, ray_local, hold_dir):
    """SIGKILL of the actor that holds a call in flight (it said it received the call): the call is re-sent
    to the other actor and returns the same ids, well before the call timeout; Ray restarts the killed actor."""
    kb, vectors = tie_kb
    service = ray_service(kb, 2, call_timeout_s=60, suspect_s=1.0)
    client = service.spec.connect()
    q = tie_queries(vectors, 8, seed=11)
    want = expected_top_k(vectors, q, K)
    pid0 = service.pids()[0]  # rank 0 is pinned to actor 0
    result = {}
    try:
        (hold_dir / "hold-0").touch()  # actor 0 holds the calls it receives ...
        t = threading.Thread(target=lambda: result.update(r=client.retrieve(q, K), t=time.monotonic()))
        t0 = time.monotonic()
        t.start()
        wait_until("call inside actor 0", (hold_dir / "received-0").exists)
        os.kill(pid0, signal.SIGKILL)  # ... and dies under the call
        (hold_dir / "hold-0").unlink()
        t.join(timeout=50)
        assert not t.is_alive()
        np.testing.assert_array_equal(result["r"].ids, want)
        assert result["t"] - t0 < 60 / 2  # answered after the death, not a timeout
        assert client.retries >= 1
        wait_until("restarted actor 0", lambda: _restarted(service, pid0))
        client.suspect_until[0] = 0.0  # actor 0 is back: stop passing it over
        np.testing.assert_array_equal(client.retrieve(q, K).ids, want)
        assert service.stats()[0]["calls"] == 1  # the restarted actor 0 served it
    finally:
        service.close()


@pytest.mark.slow
def test_single_actor_killed_during_call_is_waited_for_while_it_restarts(tie_kb, ray_local, hold_dir):
    """One actor, killed under a call, with a restart left: the call waits for the restart (tries that find the
    actor restarting do not count against max_attempts) instead of spending its 2 tries in a fraction of a
    second, and gets the right ids from the restarted actor."""
    kb, vectors = tie_kb
    service = ray_service(kb, 1, call_timeout_s=60, max_restarts=1, max_attempts=2, retry_backoff_s=0.01)
    client = service.spec.connect()
    q = tie_queries(vectors, 4, seed=15)
    pid = service.pids()[0]
    box: dict = {}

    def call():
        try:
            box["ids"] = client.retrieve(q, K).ids
        except Exception as e:  # reported below
            box["error"] = e

    try:
        (hold_dir / "hold-0").touch()
        t = threading.Thread(target=call)
        t.start()
        wait_until("call inside the actor", (hold_dir / "received-0").exists)
        os.kill(pid, signal.SIGKILL)  # killed under the call
        (hold_dir / "hold-0").unlink()
        t.join(timeout=60)
        assert not t.is_alive() and "error" not in box, box
        np.testing.assert_array_equal(box["ids"], expected_top_k(vectors, q, K))
        assert client.retries >= 1 and wait_until("restarted actor", lambda: _restarted(service, pid)) != pid
    finally:
        service.close()


@pytest.mark.slow
def test_actor_killed_before_the_first_call_of_a_client_is_waited_for(tie_kb, ray_local, hold_dir):
    """An actor SIGKILLed between the pool's creation and a client's first call (the pool's facts, asked for as
    the client is made: the moment the ranks attach), its restart held until the client has tried: making the
    client waits for the restart like any call instead of failing with "The actor is restarting", and its calls
    get the right ids from the restarted actor."""
    kb, vectors = tie_kb
    service = ray_service(kb, 1, call_timeout_s=60, max_restarts=1, max_attempts=2, retry_backoff_s=0.01)
    q = tie_queries(vectors, 4, seed=16)
    pid = service.pids()[0]
    box: dict = {}

    def attach():
        try:
            box["client"] = service.spec.connect()
        except Exception as e:  # reported below
            box["error"] = e

    try:
        (hold_dir / "start-0").touch()  # the restart waits here ...
        os.kill(pid, signal.SIGKILL)
        wait_until("the actor restarting", (hold_dir / "starting-0").exists)
        t = threading.Thread(target=attach)
        t.start()
        t.join(timeout=3)  # ... while the client's first call finds it restarting
        assert t.is_alive() and not box, box
        (hold_dir / "start-0").unlink()
        t.join(timeout=60)
        assert not t.is_alive() and "error" not in box, box
        client = box["client"]
        assert (client.dim, client.n_passages) == (vectors.shape[1], len(vectors))
        np.testing.assert_array_equal(client.retrieve(q, K).ids, expected_top_k(vectors, q, K))
        assert service.pids()[0] != pid
        client.close()
    finally:
        (hold_dir / "start-0").unlink(missing_ok=True)
        service.close()


@pytest.mark.slow
def test_hung_actor_call_times_out_and_is_resent(tie_kb, ray_local):
    kb, vectors = tie_kb
    service = ray_service(kb, 2, call_timeout_s=2.0, suspect_s=30.0)
    client = service.spec.connect()
    q = tie_queries(vectors, 6, seed=12)
    pid0 = service.pids()[0]
    try:
        os.kill(pid0, signal.SIGSTOP)
        t0 = time.monotonic()
        r = client.retrieve(q, K)
        elapsed = time.monotonic() - t0
        np.testing.assert_array_equal(r.ids, expected_top_k(vectors, q, K))
        assert 2.0 <= elapsed < 20 and client.retries == 1
        t0 = time.monotonic()
        client.retrieve(q, K)  # the hung actor is passed over now: no second timeout
        assert time.monotonic() - t0 < 2.0
    finally:
        os.kill(pid0, signal.SIGCONT)
        service.close()


@pytest.mark.slow
def test_retries_exhausted_raise_retrieval_error(tie_kb, ray_local):
    from rayrag.errors import RetrievalError

    kb, vectors = tie_kb
    service = ray_service(kb, 1, call_timeout_s=5.0, max_restarts=0, max_attempts=3, retry_backoff_s=0.1)
    client = service.spec.connect()
    try:
        os.kill(service.pids()[0], signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(RetrievalError, match=r"retrieval failed after 3 tries on the 1 actors of pool rayrag-"):
            client.retrieve(tie_queries(vectors, 2, seed=13), K)
        assert time.monotonic() - t0 < 3 * 5.0 + 5
    finally:
        service.close()


@pytest.mark.slow
def test_client_in_another_process_from_the_spec(tie_kb, ray_local, tmp_path):
    """A process that did not create the pool makes its client from the service's spec (as a DDP rank, a Ray
    Train worker or a Tune trial does): it uses the pool, and closing it leaves the pool to its owner."""
    kb, vectors = tie_kb
    service = ray_service(kb, 2)
    q = tie_queries(vectors, 5, seed=14)
    np.save(tmp_path / "q.npy", q)
    code = ("import numpy as np, sys; from rayrag.retrieval.service import load_spec; "
            f"c = load_spec(sys.argv[1]).connect(); r = c.retrieve(np.load({str(tmp_path / 'q.npy')!r}), {K}); "
            f"np.save({str(tmp_path / 'ids.npy')!r}, r.ids); print(c.rank, c.connection.connected); c.close()")
    try:
        proc = subprocess.run([sys.executable, "-c", code, service.spec.to_json()], env=child_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.split()[-2:] == ["0", "True"]
        np.testing.assert_array_equal(np.load(tmp_path / "ids.npy"), expected_top_k(vectors, q, K))
        assert service.stats()[0]["calls"] == 1  # served by the pool, not by a pool of its own
        client = service.spec.connect()
        np.testing.assert_array_equal(client.retrieve(q, K).ids, expected_top_k(vectors, q, K))
    finally:
        service.close()


def test_train_options_retrieval_flags(tmp_path):
    from rayrag.cluster.args import ClusterArgs
    from rayrag.errors import RayragError
    from rayrag.retrieval.options import RetrievalArgs
    from rayrag.train.options import TrainOptions

    def opts(backend: str, workers: int = 1, address: str | None = None):
        return TrainOptions(data_dir=tmp_path, output_dir=tmp_path / "o", model_name_or_path=tmp_path, do_train=True,
                            retrieval=RetrievalArgs(backend, workers), cluster=ClusterArgs(address))

    with pytest.raises(RayragError, match="--retrieval.num_workers applies to --retrieval.backend ray"):
        opts("pytorch", 2).validate()
    with pytest.raises(RayragError, match="--cluster.address 'somewhere'"):
        opts("ray", address="somewhere").validate()
    for address in ("auto", "local", "10.0.0.1:6379", "ray://head:10001"):
        opts("ray", 4, address).validate()


def test_coalescer_merges_requests_that_wait_together():
    """While one batch runs, requests that arrive are merged into the next batch, each gets its own result,
    and an error of a batch reaches every request of that batch."""
    from rayrag.retrieval.ray.coalesce import Coalescer

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


def test_coalescer_window_merges_requests_that_arrive_within_it():
    """With a window, a request that arrives while the first waits joins its search; a lone request still runs,
    after the window; once as many wait as the largest recent search merged, the search starts at once."""
    from rayrag.retrieval.ray.coalesce import Coalescer

    batches: list[list[int]] = []

    def run_batch(key, payloads):
        batches.append(list(payloads))
        return [p + 100 for p in payloads]

    c = Coalescer(run_batch, window_s=2.0)
    results: dict[int, int] = {}
    first = threading.Thread(target=lambda: results.update({1: c.submit("k", 1)}))
    t0 = time.monotonic()
    first.start()
    wait_until("the first request to be pending", lambda: c.stats.requests == 1)
    second = threading.Thread(target=lambda: results.update({2: c.submit("k", 2)}))
    second.start()
    for t in (first, second):
        t.join(timeout=30)
    assert results == {1: 101, 2: 102} and batches == [[1, 2]]
    assert time.monotonic() - t0 >= 2.0  # the searcher waited the window out
    t0 = time.monotonic()
    assert c.submit("k", 3) == 103 and batches[-1] == [3] and 2.0 <= time.monotonic() - t0 < 20
    assert 4.0 <= c.stats.waited_s < 40 and c.stats.busy_s < c.stats.waited_s  # two windows waited out
    # Two at once again, as many as the largest recent search: it starts when both are there, not after 2 s.
    t0 = time.monotonic()
    pair = [threading.Thread(target=lambda p=p: results.update({p: c.submit("k", p)})) for p in (5, 6)]
    for t in pair:
        t.start()
    for t in pair:
        t.join(timeout=30)
    assert results[5] == 105 and results[6] == 106 and sorted(batches[-1]) == [5, 6]
    assert time.monotonic() - t0 < 1.5
    c.close()


def test_unreachable_ray_address_fails_fast_with_the_fix():
    port = free_port()  # nothing listens there
    code = ("from rayrag.cluster import connect\n"
            f"connect('127.0.0.1:{port}', flag='--cluster.address')")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"RayConnectError: --cluster.address 127.0.0.1:{port}: no Ray cluster answers there" in proc.stderr
    assert "ray start --head" in proc.stderr
    assert time.monotonic() - t0 < 60


@pytest.mark.slow
def test_pool_over_missing_kb_names_the_cause(ray_local, tmp_path):
    from rayrag.errors import RetrievalError

    with pytest.raises(RetrievalError, match=r"retrieval actors over .*did not start: ActorDiedError: "
                                             r"rayrag.errors.RayragError: .*no such knowledge base directory"):
        ray_service(tmp_path / "missing", 2, ready_timeout_s=120)
