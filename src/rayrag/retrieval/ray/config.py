"""How a pool of retrieval actors is made and called: `PoolConfig` and the policies."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayrag.errors import RayragError

POLICIES = ("rayrag", "reference")
"""rayrag: pinned actors, one shared index copy, merged calls; reference: the reference's pool (random actor,
a private index copy per actor, serial actors, the reference's search settings)."""

LOOKUPS = ("auto", "client", "actor")
"""Values of `PoolConfig.lookup`."""


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
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each actor asks for, e.g. '{"retrieval": 0.01}' with nodes started by
    `ray start --resources '{"retrieval": 1}'`: the pool runs only on those nodes (where the knowledge base is)."""
    faiss_threads: int = 0
    """FAISS threads per actor (0: the node's cores divided among the M actors, at least 1: trainers wait
    while the actors search. Measured at W=4 over 200k x 768 on 2 cores: 1 thread each for 2 actors 0.147 s
    per step, 2 each 0.178 s; 2 threads for 1 actor 0.168 s, 1 thread 0.199 s)."""
    max_concurrency: int = 32
    """Concurrent calls an actor accepts (rayrag policy); they are merged into shared searches."""
    coalesce_window_s: float = 0.005
    """How long an actor's searcher waits, after the first request of a search arrives, for more requests
    to search with it in one BLAS call, or less once as many requests wait as its recent searches merged
    (0: search at once; requests that arrive meanwhile still join the next search). Trainers in lockstep reach the pool within a few ms of each other; measured at W=4 over
    200k x 768: 0 s merged a third of the requests (0.27 s per step), 5 ms all (0.15-0.17 s), 20 ms all
    but waited longer (0.19-0.23 s)."""
    lookup: str = "auto"
    """Who reads a retrieval call's titles and texts. client: the actor searches and returns scores, ids and
    vectors, and each client reads its own passages from its memory map of the knowledge base (as the
    reference's Ray retriever does), so the W ranks' look-ups run side by side instead of one after another
    on the actor's searcher thread; actor: the actor returns everything (for trainers on nodes that cannot
    read the knowledge base's files); auto: client where the knowledge base's directory exists on the
    client's node, else actor. Measured at W=4 over 200k x 768: see docs/BENCHMARKS.md."""

    def validate(self, flag_prefix: str = "--pool.") -> None:
        """Range-check every field; raise `RayragError` naming the flag (`flag_prefix` + field name)."""
        positive = ("call_timeout_s", "ready_timeout_s", "lookup_timeout_s")
        least = {"max_attempts": "0 (2 * M + 2)", "retry_backoff_s": "0", "suspect_s": "0",
                 "max_restarts": "-1 (no limit)", "num_cpus": "0", "faiss_threads": "0 (pick)", "max_concurrency": "1",
                 "coalesce_window_s": "0"}
        if self.lookup not in LOOKUPS:
            raise RayragError(f"{flag_prefix}lookup {self.lookup!r}: choose one of {', '.join(LOOKUPS)}")
        for name in positive:
            if not getattr(self, name) > 0:
                raise RayragError(f"{flag_prefix}{name} {getattr(self, name)}: must be positive")
        for name, amount in self.resources.items():
            if not amount > 0:
                raise RayragError(f"{flag_prefix}resources: {name} {amount}: must be more than 0")
        for name, low in least.items():
            if getattr(self, name) < float(low.split()[0]):
                raise RayragError(f"{flag_prefix}{name} {getattr(self, name)}: must be {low} or more")
