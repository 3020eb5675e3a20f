"""`RayPool`: the M retrieval actors of one job: created once by the service, found by name by its clients."""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rayrag.cluster.connect import NAMESPACE
from rayrag.distributed import cores
from rayrag.errors import RayragError, RetrievalError
from rayrag.retrieval.ray.actor import RetrievalActor
from rayrag.retrieval.ray.config import POLICIES, PoolConfig

log = logging.getLogger(__name__)


def actor_name(pool_name: str, i: int) -> str:
    """The Ray name of actor i of the pool `pool_name`."""
    return f"{pool_name}-{i}"


def actor_error(what: str, e: BaseException) -> str:
    """One line: `what`, the Ray error type and the cause (the last `...Error: message` line of the
    remote traceback when there is one, else the first line)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception): ", ln)]
    cause = causes[-1] if causes else (lines[0] if lines else "")
    cause = re.sub(r"\x1b\[[0-9;]*m", "", cause)  # Ray colours its messages
    return f"{what}: {type(e).__name__}: {cause}"


@dataclass
class RayPool:
    """The actors of one pool. `owner`: this process created them and kills them in `close`; `info`: what actor 0
    said when the pool was created (`RetrievalActor.ready`), empty in a pool found by `attach`."""

    name: str
    namespace: str
    actors: list
    owner: bool
    info: dict = field(default_factory=dict)

    @classmethod
    def create(cls, kb_dir: str | Path, size: int, *, policy: str = "rayrag", config: PoolConfig | None = None,
               name: str | None = None, index_path: str | Path | None = None) -> RayPool:
        """Start `size` actors over `kb_dir` (in the Ray this process is connected to) and wait until they are
        ready. `name`: the pool's name (actors `name-0` ... `name-(size-1)`); default `rayrag-<12 hex>`.
        `index_path`: a Hugging Face RAG knowledge base's FAISS file, `kb_dir` then its passages directory."""
        import ray

        from rayrag.kb.manifest import Manifest, verify_files

        config = config or PoolConfig()
        if policy not in POLICIES:
            raise RayragError(f"ray pool policy {policy!r}: choose one of {', '.join(POLICIES)}")
        if size < 1:
            raise RayragError(f"--num_retrieval_workers {size}: must be at least 1")
        kb = Path(kb_dir).resolve()
        if index_path is not None:  # no checksums to verify: each actor checks rows and sizes as it opens it
            index_path = str(Path(index_path).resolve())
        elif kb.is_dir():  # verify the knowledge base once here, not once per actor
            verify_files(kb, Manifest.read(kb), checksums=True)
        name = name or f"rayrag-{uuid.uuid4().hex[:12]}"
        threads = config.faiss_threads or max(1, cores() // size)
        reference = policy == "reference"
        remote = ray.remote(RetrievalActor)
        actors = []
        for i in range(size):
            opts = dict(name=actor_name(name, i), namespace=NAMESPACE, num_cpus=config.num_cpus,
                        max_restarts=config.max_restarts, max_task_retries=0,
                        max_concurrency=1 if reference else config.max_concurrency)
            if config.resources:  # pinned to the nodes that have them
                opts["resources"] = dict(config.resources)
            if not reference:
                opts["scheduling_strategy"] = "SPREAD"
            actors.append(remote.options(**opts).remote(str(kb), policy, threads, not reference, index=i,
                                                        window_s=config.coalesce_window_s, index_path=index_path))
        pool = cls(name, NAMESPACE, actors, owner=True)
        t0 = time.perf_counter()
        try:
            infos = ray.get([a.ready.remote() for a in actors], timeout=config.ready_timeout_s)
        except Exception as e:
            pool.close()
            raise RetrievalError(actor_error(f"the {size} retrieval actors over {kb} did not start", e)) from None
        pool.info = infos[0]
        log.info("ray pool %s: %d actors (%s policy, %d FAISS threads each) ready in %.1f s; actor pids %s",
                 name, size, policy, threads, time.perf_counter() - t0, ",".join(str(i["pid"]) for i in infos))
        return pool

    @classmethod
    def attach(cls, name: str, size: int, *, namespace: str = NAMESPACE, config: PoolConfig | None = None,
               where: str = "") -> RayPool:
        """Find the actors of the pool `name` by name, waiting with bounded backoff for them to be registered. Only
        their handles: the first call to them is the client's, with its retries (an actor may be restarting)."""
        import ray

        config = config or PoolConfig()
        deadline = time.monotonic() + config.lookup_timeout_s
        actors, pause = [], 0.05
        for i in range(size):
            while True:
                try:
                    actors.append(ray.get_actor(actor_name(name, i), namespace=namespace))
                    break
                except ValueError:
                    if pause == 0.05:
                        log.info("ray pool %s: actor %r not registered yet; waiting up to %.0f s", name,
                                 actor_name(name, i), config.lookup_timeout_s)
                    if time.monotonic() > deadline:
                        raise RetrievalError(
                            f"retrieval actor {actor_name(name, i)!r} not found in Ray namespace {namespace!r}"
                            f"{where} after {config.lookup_timeout_s:.0f} s; the process that creates the pool "
                            "(the job's driver) did not start it or has exited") from None
                    time.sleep(pause)
                    pause = min(2.0, pause * 2)
        return cls(name, namespace, actors, owner=False)

    def pids(self) -> list[int]:
        """Process ids of the actors (for memory measurements and fault-injection tests)."""
        import ray

        return ray.get([a.pid.remote() for a in self.actors], timeout=60)

    def stats(self) -> list[dict]:
        """Each actor's call counters (see `RetrievalActor.stats`)."""
        import ray

        return ray.get([a.stats.remote() for a in self.actors], timeout=60)

    def close(self) -> None:
        """Kill the actors (owner only; others just drop their handles)."""
        import ray

        if self.owner and ray.is_initialized():
            for a in self.actors:
                try:
                    ray.kill(a, no_restart=True)
                except Exception as e:  # already gone
                    log.debug("ray.kill: %s", e)
            log.info("ray pool %s: %d actors killed", self.name, len(self.actors))
        self.actors = []
