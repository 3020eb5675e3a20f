"""The `ray` backend's service: opened by a job's driver, it joins or starts Ray and owns the pool."""

from __future__ import annotations

from dataclasses import asdict

from rayrag.cluster.connect import connect
from rayrag.errors import RayragError
from rayrag.kb.layout import resolve
from rayrag.retrieval.options import RetrievalOptions
from rayrag.retrieval.ray.client import RaySpec


class RayService:
    """Joins or starts Ray and creates the job's pool; `close` kills the actors and leaves Ray as it found it."""

    def __init__(self, opts: RetrievalOptions):
        from rayrag.retrieval.ray.pool import RayPool

        if opts.settings not in (None, "reference" if opts.policy == "reference" else "fast"):
            raise RayragError(f"ray pool policy {opts.policy}: searches with its own settings, not {opts.settings}")
        kb = resolve(opts.kb, opts.index_path)  # the pool verifies it, and its actors check it as they open it
        self.connection = connect(opts.ray_address)
        try:
            self.pool = RayPool.create(kb.kb, opts.num_workers, policy=opts.policy, config=opts.pool,
                                       index_path=kb.index_path)
        except BaseException:
            self.connection.close()
            raise
        self.spec = RaySpec(address=self.connection.address, name=self.pool.name, size=opts.num_workers,
                            policy=opts.policy, kb=kb.kb, index_path=kb.index_path, pool=asdict(opts.pool))

    def pids(self) -> list[int]:
        """Process ids of the pool's actors: the processes that hold the index."""
        return self.pool.pids()

    def stats(self) -> list[dict]:
        """Each actor's call counters and FAISS threads (`RetrievalActor.stats`)."""
        return self.pool.stats()

    def close(self) -> None:
        """Kill the actors; stop Ray if this service started it, disconnect if it connected (idempotent)."""
        self.pool.close()
        self.connection.close()


def open_service(opts: RetrievalOptions) -> RayService:
    return RayService(opts)
