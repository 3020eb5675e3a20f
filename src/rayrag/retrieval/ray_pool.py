"""`ray` backend: a pool of M Ray actors serves retrieval to every training process.

    RetrievalActor   one actor: opens the knowledge base (FAISS index memory-mapped, so all actors
                     on a node share one copy), answers a whole retrieval call (ids, scores,
                     vectors, titles, texts) in one round trip, merges concurrent calls into one
                     search (`coalesce.Coalescer`).
    RayPool          the M actors of one run: created once by the owner (rank 0, before DDP starts
                     the other ranks), found by name by every other process, killed by the owner.
    RayBackend       the client in a training process: picks an actor (its own pinned actor by
                     rank, or at random for the reference policy), bounds every wait with a timeout,
                     and re-sends a failed or hung call to another actor (retrieval is read-only,
                     so at-least-once is safe) before giving up with a `RetrievalError`.

`policy="reference"` reproduces the reference's pool for honest comparisons (`ray-hf:M`): random
actor choice, a private full index copy per actor, serial actors, `search.REFERENCE` settings.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rayrag.errors import RayragError, RetrievalError
from rayrag.retrieval.base import Retrieved
from rayrag.retrieval.search import FAST, REFERENCE, SearchSettings

log = logging.getLogger(__name__)

POOL_ENV = "RAYRAG_RAY_POOL"
"""Environment variable holding the `PoolSpec` (JSON) of the run's pool; DDP ranks inherit it."""
NAMESPACE = "rayrag"
POLICIES = ("rayrag", "reference")


@dataclass
class PoolConfig:
    """How the pool's actors are made and called. Defaults suit training; tests shorten the waits."""

    call_timeout_s: float = 120.0
    """Longest wait for one actor call; a call past it is re-sent to another actor."""
    max_attempts: int = 0
    """Failed tries per retrieval call before `RetrievalError` (0: 2 * M + 2). Tries that find an actor
    restarting do not count while the call is younger than `call_timeout_s`."""
    retry_backoff_s: float = 0.2
    """Pause before a retry once every actor has failed recently (doubles, up to 2 s)."""
    suspect_s: float = 10.0
    """After a failure, an actor is passed over for this long while others are healthy."""
    max_restarts: int = 4
    """Ray restarts a dead actor this many times (it reloads the index); -1: without limit."""
    ready_timeout_s: float = 600.0
    """Longest wait for the actors to open the knowledge base."""
    lookup_timeout_s: float = 120.0
    """Longest wait, in a process that did not create the pool, for its actors to be registered."""
    num_cpus: float = 0.0
    """CPUs each actor reserves in Ray's scheduler (0: never blocks scheduling on a small node)."""
    faiss_threads: int = 0
    """FAISS threads per actor (0: half the node's cores divided among the M actors, at least 1; the
    other half is left to the trainers: an oversubscribed FAISS search is many times slower)."""
    max_concurrency: int = 32
    """Concurrent calls an actor accepts (rayrag policy); they are merged into shared searches."""


@dataclass
class PoolSpec:
    """What a process needs to find the pool: travels as JSON in `RAYRAG_RAY_POOL`."""

    address: str
    namespace: str
    name: str
    size: int
    policy: str
    kb: str

    def actor_name(self, i: int) -> str:
        return f"{self.name}-{i}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PoolSpec:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as e:
            raise RayragError(f"{POOL_ENV}={text!r}: not a rayrag pool description ({e}); unset it") from None


def _settings(policy: str) -> SearchSettings:
    return REFERENCE if policy == "reference" else FAST


class RetrievalActor:
    """Serves retrieval from one knowledge base. Made a Ray actor by `RayPool`."""

    def __init__(self, kb_dir: str, policy: str, threads: int, coalesce: bool):
        import faiss

        from rayrag.kb.store import KnowledgeBase
        from rayrag.retrieval.coalesce import Coalescer

        t0 = time.perf_counter()
        # rayrag: the index file is memory-mapped (IO_FLAG_MMAP_IFC), so the M actors of a node share
        # its pages; reference: every actor reads a private copy. The driver verified the checksums.
        self.kb = KnowledgeBase(kb_dir, mmap=policy != "reference", verify_checksums=False)
        self.settings = _settings(policy)
        self.settings.apply()
        self.threads = threads
        faiss.omp_set_num_threads(threads)
        self.coalescer = Coalescer(self._run_batch, on_start=lambda: faiss.omp_set_num_threads(threads)) \
            if coalesce else None
        self.calls = 0
        self.load_seconds = time.perf_counter() - t0

    def ready(self) -> dict:
        """Facts about this actor: pid, node, index size, threads, load time."""
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "dim": self.kb.dim,
                "n_passages": len(self.kb), "threads": self.threads, "load_seconds": self.load_seconds}

    def pid(self) -> int:
        return os.getpid()

    def stats(self) -> dict:
        """Calls served; with coalescing, how many searches ran and their sizes (in requests)."""
        if self.coalescer is None:
            return {"calls": self.calls}
        s = self.coalescer.stats  # counted under the coalescer's lock: calls arrive on many threads
        return {"calls": s.requests, "searches": s.batches, "largest": s.largest, "sizes": dict(s.sizes)}

    def _run_batch(self, key: tuple[str, int], payloads: list[np.ndarray]) -> list:
        import faiss

        from rayrag.retrieval import search as _search

        kind, k = key
        # OpenMP thread counts are per thread, and a new thread starts at OMP_NUM_THREADS (Ray sets 1
        # in an actor that reserves no CPUs): the searching thread sets its own count.
        faiss.omp_set_num_threads(self.threads)
        queries = np.concatenate(payloads, axis=0) if len(payloads) > 1 else payloads[0]
        bounds = np.cumsum([0] + [len(p) for p in payloads])
        if kind == "search":
            scores, ids = _search.search(self.kb, queries, k, self.settings)
            return [(scores[a:b], ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        r = _search.retrieve(self.kb, queries, k, self.settings)
        return [Retrieved(r.scores[a:b], r.ids[a:b], r.vectors[a:b], r.titles[a:b], r.texts[a:b])
                for a, b in zip(bounds[:-1], bounds[1:])]

    def _call(self, kind: str, queries: np.ndarray, k: int):
        queries = np.asarray(queries, dtype=np.float32)
        if self.coalescer is not None:
            return self.coalescer.submit((kind, int(k)), queries)
        self.calls += 1  # a serial actor: one call at a time
        return self._run_batch((kind, int(k)), [queries])[0]

    def retrieve(self, queries: np.ndarray, k: int) -> Retrieved:
        """The full retrieval call for queries (B, d) float32: scores, ids, vectors, titles, texts."""
        return self._call("retrieve", queries, k)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores (B, k) float32 and ids (B, k) int64 only."""
        return self._call("search", queries, k)


def _node_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class RayPool:
    """The actors of one run. `owner`: this process created them and kills them in `close`."""

    spec: PoolSpec
    actors: list
    owner: bool
    info: dict = field(default_factory=dict)

    @classmethod
    def create(cls, kb_dir: str | Path, size: int, *, address: str, policy: str = "rayrag",
               config: PoolConfig | None = None, name: str | None = None) -> RayPool:
        """Start `size` actors over `kb_dir` and wait until they are ready. `name`: the pool's name (its
        actors are `name-0` ... `name-(size-1)`); default a run-unique `rayrag-<12 hex>`."""
        import ray

        from rayrag.kb.manifest import Manifest, verify_files

        config = config or PoolConfig()
        if policy not in POLICIES:
            raise RayragError(f"ray pool policy {policy!r}: choose one of {', '.join(POLICIES)}")
        if size < 1:
            raise RayragError(f"--num_retrieval_workers {size}: must be at least 1")
        kb = Path(kb_dir).resolve()
        if kb.is_dir():  # verify the knowledge base once here, not once per actor
            verify_files(kb, Manifest.read(kb), checksums=True)
        spec = PoolSpec(address=address, namespace=NAMESPACE, name=name or f"rayrag-{uuid.uuid4().hex[:12]}",
                        size=size, policy=policy, kb=str(kb))
        threads = config.faiss_threads or max(1, _node_cpus() // (2 * size))
        reference = policy == "reference"
        remote = ray.remote(RetrievalActor)
        actors = []
        for i in range(size):
            opts = dict(name=spec.actor_name(i), namespace=spec.namespace, num_cpus=config.num_cpus,
                        max_restarts=config.max_restarts, max_task_retries=0,
                        max_concurrency=1 if reference else config.max_concurrency)
            if not reference:
                opts["scheduling_strategy"] = "SPREAD"
            actors.append(remote.options(**opts).remote(str(kb), policy, threads, not reference))
        pool = cls(spec, actors, owner=True)
        t0 = time.perf_counter()
        try:
            infos = ray.get([a.ready.remote() for a in actors], timeout=config.ready_timeout_s)
        except Exception as e:
            pool.close()
            raise RetrievalError(_actor_error(f"the {size} retrieval actors over {kb} did not start", e)) from None
        pool.info = infos[0]
        log.info("ray pool %s: %d actors (%s policy, %d FAISS threads each) ready in %.1f s; actor pids %s",
                 spec.name, size, policy, threads, time.perf_counter() - t0, ",".join(str(i["pid"]) for i in infos))
        return pool

    @classmethod
    def attach(cls, spec: PoolSpec, config: PoolConfig | None = None) -> RayPool:
        """Find the actors of `spec` by name, waiting with bounded backoff for the owner to register them."""
        import ray

        config = config or PoolConfig()
        deadline = time.monotonic() + config.lookup_timeout_s
        actors, pause = [], 0.05
        for i in range(spec.size):
            while True:
                try:
                    actors.append(ray.get_actor(spec.actor_name(i), namespace=spec.namespace))
                    break
                except ValueError:
                    if pause == 0.05:
                        log.info("ray pool %s: actor %r not registered yet; waiting up to %.0f s", spec.name,
                                 spec.actor_name(i), config.lookup_timeout_s)
                    if time.monotonic() > deadline:
                        raise RetrievalError(
                            f"{POOL_ENV}: retrieval actor {spec.actor_name(i)!r} not found in Ray namespace "
                            f"{spec.namespace!r} at {spec.address} after {config.lookup_timeout_s:.0f} s; the "
                            "process that creates the pool (training rank 0) did not start it or has exited") from None
                    time.sleep(pause)
                    pause = min(2.0, pause * 2)
        pool = cls(spec, actors, owner=False)
        try:
            pool.info = ray.get(actors[0].ready.remote(), timeout=config.call_timeout_s)
        except Exception as e:
            raise RetrievalError(_actor_error(f"retrieval actor {spec.actor_name(0)!r} does not answer", e)) from None
        return pool

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors], timeout=60)

    def close(self) -> None:
        """Kill the actors (owner only; others just drop their handles)."""
        import ray

        if self.owner and ray.is_initialized():
            for a in self.actors:
                try:
                    ray.kill(a, no_restart=True)
                except Exception as e:  # already gone
                    log.debug("ray.kill: %s", e)
            log.info("ray pool %s: %d actors killed", self.spec.name, len(self.actors))
        self.actors = []


def _actor_error(what: str, e: BaseException) -> str:
    """One line: `what`, the Ray error type and the cause (the last `...Error: message` line of the
    remote traceback when there is one, else the first line)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception): ", ln)]
    cause = causes[-1] if causes else (lines[0] if lines else "")
    cause = re.sub(r"\x1b\[[0-9;]*m", "", cause)  # Ray colours its messages
    return f"{what}: {type(e).__name__}: {cause}"


class RayBackend:
    """A training process's client of the pool: pinned or random actor choice, timeouts, retries."""

    name = "ray"

    def __init__(self, pool: RayPool, *, rank: int = 0, config: PoolConfig | None = None, connection=None,
                 owns_pool: bool = False, seed: int | None = None):
        self.pool = pool
        self.config = config or PoolConfig()
        self.rank = rank
        self.connection = connection
        self.owns_pool = owns_pool
        self.dim = int(pool.info["dim"])
        self.n_passages = int(pool.info["n_passages"])
        self.random = random.Random(seed if seed is not None else os.getpid() ^ time.time_ns())
        self.suspect_until = [0.0] * len(pool.actors)
        self.retries = 0
        self.closed = False

    @classmethod
    def start(cls, kb_dir: str | Path, num_workers: int, *, ray_address: str | None = None, policy: str = "rayrag",
              config: PoolConfig | None = None, rank: int = 0) -> RayBackend:
        """Connect to (or start) Ray, create a pool of `num_workers` actors owned by this backend."""
        from rayrag.retrieval.ray_connect import connect

        conn = connect(ray_address, namespace=NAMESPACE)
        try:
            pool = RayPool.create(kb_dir, num_workers, address=conn.address, policy=policy, config=config)
        except BaseException:
            conn.close()
            raise
        return cls(pool, rank=rank, config=config, connection=conn, owns_pool=True)

    @classmethod
    def attach(cls, spec: PoolSpec, *, rank: int = 0, config: PoolConfig | None = None) -> RayBackend:
        """Connect to the cluster of `spec` and find its actors (a process that did not create the pool)."""
        from rayrag.retrieval.ray_connect import connect

        conn = connect(spec.address, namespace=spec.namespace, log_to_driver=False)
        try:
            pool = RayPool.attach(spec, config)
        except BaseException:
            conn.close()
            raise
        return cls(pool, rank=rank, config=config, connection=conn)

    # ----- dispatch ---------------------------------------------------------------------------
    def _order(self) -> list[int]:
        """Actors to try, best first. rayrag: this rank's own actor (rank mod M), so with W <= M trainers
        no two share an actor and with W = c*M each actor serves c; then the others in turn.
        reference: a random actor per call. Actors that failed recently go last."""
        m = len(self.pool.actors)
        if self.pool.spec.policy == "reference":
            first = self.random.randrange(m)
        else:
            first = self.rank % m
        order = [(first + j) % m for j in range(m)]
        now = time.monotonic()
        return [i for i in order if self.suspect_until[i] <= now] + [i for i in order if self.suspect_until[i] > now]

    def _call(self, method: str, queries: np.ndarray, k: int):
        """One retrieval call with retries. A try that fails (the actor died, or gave no answer within
        `call_timeout_s`) counts against `max_attempts`, except that while an actor is only restarting
        (`ActorUnavailableError`) and the call is younger than `call_timeout_s`, waiting for it is free:
        with one actor, or every actor restarting at once, a restart that reloads a large index takes
        longer than a few backoffs."""
        import ray
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        if self.closed or not self.pool.actors:
            raise RetrievalError("ray backend: the pool is closed")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        m = len(self.pool.actors)
        attempts = self.config.max_attempts or 2 * m + 2
        pause = self.config.retry_backoff_s
        errors: list[str] = []
        started = time.monotonic()
        failed = tries = 0
        while failed < attempts:
            order = self._order()
            i = order[0]
            if tries and self.suspect_until[i] > time.monotonic():  # every actor failed recently
                time.sleep(pause)
                pause = min(2.0, pause * 2)
            tries += 1
            ref = getattr(self.pool.actors[i], method).remote(queries, k)
            restarting = False
            try:
                return ray.get(ref, timeout=self.config.call_timeout_s)
            except GetTimeoutError:
                errors.append(f"actor {i}: no answer in {self.config.call_timeout_s:g} s")
                try:
                    ray.cancel(ref)
                except Exception as e:  # a running actor task cannot always be cancelled
                    log.debug("ray.cancel: %s", e)
            except RayActorError as e:  # includes ActorDiedError and ActorUnavailableError
                errors.append(_actor_error(f"actor {i}", e))
                restarting = isinstance(e, ActorUnavailableError)
            if not (restarting and time.monotonic() - started < self.config.call_timeout_s):
                failed += 1
            self.suspect_until[i] = time.monotonic() + self.config.suspect_s
            self.retries += 1
            log.warning("ray backend rank %d: retrieval call to %s failed (%s); retrying (%d/%d)", self.rank,
                        self.pool.spec.actor_name(i), errors[-1], failed, attempts)
        raise RetrievalError(
            f"retrieval failed after {tries} tries on the {m} actors of pool {self.pool.spec.name} at "
            f"{self.pool.spec.address}: " + "; ".join(errors[-3:]) +
            ". The actors died or hung more often than they restart; check the Ray logs (ray logs / "
            "/tmp/ray/session_latest/logs) and memory on the retrieval nodes")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._call("search", queries, k)

    def retrieve(self, queries: np.ndarray, k: int) -> Retrieved:
        return self._call("retrieve", queries, k)

    def actor_pids(self) -> list[int]:
        """Process ids of the pool's actors (for memory measurements and fault-injection tests)."""
        return self.pool.pids()

    def stats(self) -> list[dict]:
        """Each actor's call counters (see `RetrievalActor.stats`)."""
        import ray

        return ray.get([a.stats.remote() for a in self.pool.actors], timeout=60)

    def close(self) -> None:
        """Kill the actors if this backend created them; disconnect if it connected (idempotent)."""
        self.closed = True
        if self.owns_pool:
            self.pool.close()
        if self.connection is not None:
            self.connection.close()
            self.connection = None
