"""`RaySpec` (how a process finds the pool) and `RayClient` (one process's client of the pool: pinned or
random actor, timeouts, retries).

It finds the actors by name (never creates or kills them), calls this process's own actor (rank mod
M; a random one under the reference policy), reads the titles and texts of the answers from its own
memory map of the passages where it can (`PoolConfig.lookup`), bounds every wait with a timeout, and
re-sends a failed or hung call to another actor (retrieval is read-only, so at-least-once is safe)
before giving up with a `RetrievalError`. Every call goes that way, the first one (the pool's facts,
asked for as the client is made) included: an actor may be restarting while the ranks attach.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rayrag.cluster.connect import NAMESPACE, connect
from rayrag.errors import RetrievalError
from rayrag.kb.store import KnowledgeBase, Passages, check_k
from rayrag.retrieval.base import Retrieved
from rayrag.retrieval.ray.config import PoolConfig
from rayrag.retrieval.ray.pool import RayPool, actor_error, actor_name

log = logging.getLogger(__name__)


@dataclass
class RaySpec:
    """What a process needs to find the pool: Ray's address, the pool's name and size, and the call settings."""

    address: str
    name: str
    size: int
    policy: str
    kb: str
    index_path: str | None = None
    """The Hugging Face layout's FAISS file (`kb` its passages directory); None for a rayrag directory."""
    namespace: str = NAMESPACE
    pool: dict = field(default_factory=dict)
    """The `PoolConfig` every client calls with (timeouts, retries), as a dict."""
    backend: str = "ray"

    @property
    def config(self) -> PoolConfig:
        return PoolConfig(**self.pool)

    def connect(self, rank: int | None = None):
        """This process's client (`rank`: the trainer's rank, for pinning; default the process group's)."""
        return RayClient(self, rank=rank)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class RayClient:
    """A process's client of the pool described by `spec`."""

    def __init__(self, spec: RaySpec, *, rank: int | None = None, seed: int | None = None):
        from rayrag.distributed import rank_and_world

        self.spec = spec
        self.config = spec.config
        self.rank = rank_and_world()[0] if rank is None else rank
        self.random = random.Random(seed if seed is not None else os.getpid() ^ time.time_ns())
        self.suspect_until = [0.0] * spec.size
        self.retries = 0
        self.closed = False
        self.reader = None
        self.at: list | None = None
        """[index generation, its knowledge base] that every call names (`switch`); None: the pool's own."""
        self.connection = connect(spec.address, log_to_driver=False)
        try:
            self.pool = RayPool.attach(spec.name, spec.size, namespace=spec.namespace, config=self.config,
                                       where=f" at {spec.address}")
        except BaseException:
            self.connection.close()
            raise
        try:
            self.info = self._call("ready")  # any actor's facts: they all opened the same knowledge base
            self.dim = int(self.info["dim"])
            self.n_passages = int(self.info["n_passages"])
            self.reader = self._open_reader()
        except BaseException:
            self.close()
            raise

    def _open_reader(self) -> KnowledgeBase | None:
        """The passages, opened here without the index, when this client reads titles and texts itself
        (`PoolConfig.lookup`); None when the actors return them. The passages must be the pool's: same
        fingerprint (count, vector size, a few passages), wherever the path leads on this node."""
        mode = self.config.lookup
        if mode == "actor":
            return None
        fix = "give every node the knowledge base at the same path (shared storage), or --pool.lookup actor"
        why = ""
        if not Path(self.spec.kb).is_dir():
            why = f"the knowledge base {self.spec.kb} is not on this node"
        else:
            reader = KnowledgeBase(self.spec.kb, index_path=self.spec.index_path, verify_checksums=False,
                                   load_index=False)
            if reader.fingerprint() == self.info.get("fingerprint"):
                return reader
            why = f"the passages at {self.spec.kb} on this node differ from those the pool's actors opened"
        if mode == "client":
            raise RetrievalError(f"--pool.lookup client: {why}; {fix}")
        log.info("ray client rank %d: %s, so the actors return titles and texts too", self.rank, why)
        return None

    def _order(self) -> list[int]:
        """Actors to try, best first. rayrag: this rank's own actor (rank mod M), so with W <= M trainers
        no two share an actor and with W = c*M each actor serves c; then the others in turn.
        reference: a random actor per call. Actors that failed recently go last."""
        m = len(self.pool.actors)
        first = self.random.randrange(m) if self.spec.policy == "reference" else self.rank % m
        order = [(first + j) % m for j in range(m)]
        now = time.monotonic()
        return [i for i in order if self.suspect_until[i] <= now] + [i for i in order if self.suspect_until[i] > now]

    def _call(self, method: str, *args):
        """`method(*args)` of an actor, with retries. A try that fails (the actor died, or gave no answer within
        `call_timeout_s`) counts against `max_attempts`, except that while an actor is only restarting
        (`ActorUnavailableError`) and the call is younger than `call_timeout_s`, waiting for it is free: with one
        actor, or every actor restarting at once, a restart that reloads a large index takes longer than a few
        backoffs."""
        import ray
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        if self.closed or not self.pool.actors:
            raise RetrievalError("ray retrieval client: closed")
        m = len(self.pool.actors)
        attempts = self.config.max_attempts or 2 * m + 2
        pause = self.config.retry_backoff_s
        errors: list[str] = []
        started = time.monotonic()
        failed = tries = 0
        while failed < attempts:
            i = self._order()[0]
            if tries and self.suspect_until[i] > time.monotonic():  # every actor failed recently
                time.sleep(pause)
                pause = min(2.0, pause * 2)
            tries += 1
            ref = getattr(self.pool.actors[i], method).remote(*args)
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
                errors.append(actor_error(f"actor {i}", e))
                restarting = isinstance(e, ActorUnavailableError)
            if not (restarting and time.monotonic() - started < self.config.call_timeout_s):
                failed += 1
            self.suspect_until[i] = time.monotonic() + self.config.suspect_s
            self.retries += 1
            log.warning("ray client rank %d: retrieval call to %s failed (%s); retrying (%d/%d)", self.rank,
                        actor_name(self.spec.name, i), errors[-1], failed, attempts)
        raise RetrievalError(
            f"retrieval failed after {tries} tries on the {m} actors of pool {self.spec.name} at "
            f"{self.spec.address}: " + "; ".join(errors[-3:]) +
            ". The actors died or hung more often than they restart; check the Ray logs (ray logs / "
            "/tmp/ray/session_latest/logs) and memory on the retrieval nodes")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._call("search", np.ascontiguousarray(queries, dtype=np.float32), k, self.at)

    def retrieve(self, queries: np.ndarray, k: int) -> Retrieved:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.reader is None:
            return self._call("retrieve", queries, k, self.at)
        scores, ids, vectors = self._call("nearest", queries, k, self.at)
        titles, texts = self.reader.texts(ids)  # a re-embedding keeps the passages' titles and texts
        return Retrieved(scores, ids, vectors, titles, texts)

    def passages(self, ids: np.ndarray) -> Passages:
        return self._call("passages", np.ascontiguousarray(ids, dtype=np.int64), 0, self.at)

    @property
    def generation(self) -> int:
        return self.at[0] if self.at else 0

    def switch(self, generation: int, kb: str) -> None:
        """Name generation `generation` (`kb`) in every call from now on: each actor opens it on the first call
        that names it (`RetrievalActor`), so every rank that switched at a step is answered from it."""
        self.at = [int(generation), str(kb)]

    def check_k(self, k: int, flag: str = "--n_docs") -> None:
        check_k(k, self.n_passages, self.spec.kb, flag)

    def close(self) -> None:
        """Drop the handles and disconnect if this client connected (idempotent); the actors stay."""
        self.closed = True
        self.reader = None
        self.pool.actors = []
        self.connection.close()
