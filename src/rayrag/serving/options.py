"""Options of `rayrag serve`: the model, the knowledge base and retrieval parts every answering verb nests, and the
server's own (address, replicas, batching, deadlines)."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from rayrag.cluster.args import ClusterArgs
from rayrag.errors import RayragError
from rayrag.kb.args import KbArgs
from rayrag.model.options import RagType
from rayrag.retrieval.options import RetrievalArgs


@dataclass
class ServeOptions:
    """Options of `rayrag serve`."""

    model: Path
    """Model directory (init-model or train output, or a RAG directory saved by plain transformers)."""
    model_type: RagType | None = None
    """Load a RAG checkpoint as this class (default: as saved)."""
    host: str = "127.0.0.1"
    """Address to listen on. The default, loopback, reaches this machine only; 0.0.0.0 reaches every network the
    machine is on, and the server has no authentication of its own (see the README before you do that)."""
    port: int = 8000
    """Port to listen on."""
    replicas: int = 1
    """Generator replicas: each holds a copy of the model and answers one batch at a time."""
    max_batch_size: int = 8
    """Most questions a replica answers in one retrieval call and one `generate` (1: no batching)."""
    batch_wait_timeout_s: float = 0.1
    """How long a replica waits, after the first question of a batch, for more to join it; a batch that fills up
    goes at once, so only a question that comes alone waits this long. Under load clients' next questions come back
    spread out: with 8 clients on the demo's model on 2 cores and 1 replica, 0.02 s made batches of 2 (1.6 times the
    questions per second of no batching), 0.05 s of 4 (2.3 times), 0.1 s of 8 (3.1 times, p99 714 ms against
    2,193 ms) (docs/BENCHMARKS.md, "Serving")."""
    request_timeout_s: float = 60.0
    """Longest a request waits for its answer; past it (or when its replica dies) the client gets a 503 to retry."""
    max_length: int = 25
    """Maximum answer length in tokens."""
    threads_per_replica: int = 0
    """torch threads of each replica (0: this machine's cores divided among the replicas, at least 1)."""
    kb: KbArgs = field(default_factory=KbArgs)
    """The knowledge base to retrieve from (default: the model's)."""
    retrieval: RetrievalArgs = field(default_factory=RetrievalArgs)
    """Where retrieval is served from: local (each replica maps the index) or ray (one pool of retrieval actors that
    every replica calls; --distributed_retriever ray --num_retrieval_workers M)."""
    cluster: ClusterArgs = field(default_factory=ClusterArgs)
    """The Ray cluster to serve on (--ray_address; default: a local instance started for the server), and what
    each replica asks it for (--cluster.cpus_per_worker, default 1; --cluster.use_gpu)."""

    def validate(self) -> None:
        """Check every flag; raise `RayragError` naming the flag. Changes nothing."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            if self.host != "localhost":
                raise RayragError(f"--host {self.host!r}: give an IP address, e.g. 127.0.0.1 (this machine only) or "
                                  "0.0.0.0 (every network)") from None
        if not 0 < self.port < 65536:
            raise RayragError(f"--port {self.port}: must be from 1 to 65535")
        for flag, value in (("--replicas", self.replicas), ("--max_batch_size", self.max_batch_size),
                            ("--max_length", self.max_length)):
            if value < 1:
                raise RayragError(f"{flag} {value}: must be at least 1")
        if self.threads_per_replica < 0:
            raise RayragError(f"--threads_per_replica {self.threads_per_replica}: must be 0 (automatic) or more")
        if not self.batch_wait_timeout_s >= 0:
            raise RayragError(f"--batch_wait_timeout_s {self.batch_wait_timeout_s}: must be 0 or more")
        if not self.request_timeout_s > 0:
            raise RayragError(f"--request_timeout_s {self.request_timeout_s}: must be more than 0")
        self.kb.validate()
        self.retrieval.validate()
        self.cluster.validate()
        if self.retrieval.backend == "pytorch":
            raise RayragError("--retrieval.backend pytorch serves the ranks of one training job; serve with local "
                              "(each replica maps the index) or ray (one pool for every replica)")
        if self.cluster.workers is not None:
            raise RayragError(f"--cluster.workers {self.cluster.workers}: the server's workers are its generator "
                              "replicas; use --replicas")

    def resolved(self) -> ServeOptions:
        """A copy with the model's and the knowledge base's paths absolute (the replicas run elsewhere)."""
        return dataclasses.replace(self, model=Path(self.model).expanduser().resolve(), kb=self.kb.resolved().absolute(),
                                   retrieval=self.retrieval.copy())

    @property
    def cpus_per_replica(self) -> float:
        return self.cluster.cpus_per_worker if self.cluster.cpus_per_worker is not None else 1.0
