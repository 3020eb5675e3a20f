"""What `rayrag bench retrieval` runs: the options dataclass (`validate()` checks, `resolved()` copies) and the
backend names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from rayrag.errors import RayragError
from rayrag.kb.faiss_index import INDEX_TYPES
from rayrag.retrieval.ray.config import PoolConfig

BACKEND_KINDS = ("local", "pytorch", "pytorch-hf", "ray", "ray-hf")
"""Backend names, in the order the table lists them."""
REFERENCE_KINDS = ("pytorch-hf", "ray-hf")
"""The reference's behaviour, kept as rows of its own: its search settings (FAISS calls of 8 queries, FAISS
defaults), and for ray-hf its pool policy too. Every other kind searches with rayrag's best settings."""
ARCHITECTURES = {"local": "local", "pytorch": "pytorch", "pytorch-hf": "pytorch", "ray": "ray", "ray-hf": "ray"}
"""The retrieval backend (rayrag.retrieval) each benchmark kind runs."""


@dataclass(frozen=True)
class BackendSpec:
    """One backend of the benchmark, as named on the command line (`local`, `pytorch`, `pytorch-hf`, `ray:4`,
    `ray-hf:2`)."""

    kind: str
    """local | pytorch (rank 0 serves, rayrag's settings) | pytorch-hf (the reference's torch.distributed
    retriever: rank 0 serves, FAISS calls of 8, FAISS defaults) | ray (rayrag's pool) | ray-hf (the pool with the
    reference's policy and settings)."""
    actors: int = 0
    """Retrieval actors of a ray pool; 0 for local and the pytorch kinds."""

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.actors}" if self.actors else self.kind

    @property
    def architecture(self) -> str:
        """Where the index lives: local (every rank) | pytorch (rank 0) | ray (a pool of actors)."""
        return ARCHITECTURES[self.kind]

    @property
    def settings(self) -> str:
        """How the index is searched: reference (pytorch-hf, ray-hf) or fast (rayrag's best, the others)."""
        return "reference" if self.kind in REFERENCE_KINDS else "fast"

    def retrieval_processes(self, workers: int) -> int:
        """Processes that hold the index: every rank (local), rank 0 (pytorch) or the actors (ray)."""
        return {"local": workers, "pytorch": 1}.get(self.architecture, self.actors)

    @classmethod
    def parse(cls, text: str) -> BackendSpec:
        name, _, count = text.strip().partition(":")
        if name not in BACKEND_KINDS:
            raise RayragError(f"--backends {text!r}: unknown backend; choose from local, pytorch, pytorch-hf, ray:M, "
                              "ray-hf:M")
        if ARCHITECTURES[name] != "ray":
            if count:
                raise RayragError(f"--backends {text!r}: {name} takes no process count; write {name}")
            return cls(name)
        if not count.isdigit() or int(count) < 1:
            raise RayragError(f"--backends {text!r}: write {name}:M with M >= 1 retrieval actors, e.g. {name}:2")
        return cls(name, int(count))


@dataclass
class BenchOptions:
    """Options of `rayrag bench retrieval`."""

    out: Path = Path("runs/bench")
    """Directory for results.json, results.csv, results.md, results.png (and the index, unless --cache_dir)."""
    workers: str = "2,3,4"
    """Training process counts to run, comma-separated (each is one torch.distributed gloo group)."""
    backends: str = "local,pytorch,pytorch-hf,ray:1,ray:2,ray:4,ray-hf:4"
    """Backends, comma-separated. rayrag's best settings: local (index in every rank), pytorch (rank 0 serves),
    ray:M (rayrag's pool of M actors). The reference's behaviour: pytorch-hf (its torch.distributed retriever:
    rank 0 serves, FAISS calls of 8, FAISS defaults), ray-hf:M (its Ray pool: random actor, private index copies,
    its settings)."""
    index_size: int = 50_000
    """Passages in the benchmark index (the reference indexed 21M; 200000 x 768 is a 586 MiB flat index)."""
    dim: int = 768
    """Vector size."""
    index_type: str = "flat"
    """FAISS index type: flat | hnsw | ivfpq."""
    clusters: int = 0
    """Clusters the random vectors are drawn around (0: about sqrt(--index_size)), so hnsw/ivfpq are meaningful."""
    batch_size: int = 8
    """Query vectors per training process per step (questions per GPU)."""
    n_docs: int = 5
    """Passages retrieved per query."""
    steps: int = 20
    """Timed steps per (backend, workers) run (the reference timed 500)."""
    rounds: int = 3
    """Rounds: each runs every (backend, workers) cell once, in an order shuffled by --seed and the round; the
    table reports the median over rounds and their min-max (use at least 3 on a shared machine)."""
    warmup_steps: int = 2
    """Untimed steps before the timed ones (the first call maps the index's pages)."""
    step_time: float = 0.5
    """Simulated compute seconds per step, between the retrieval call and the all-reduce."""
    seed: int = 0
    """Seed of the vectors, the queries (rank r at step s always asks the same ones) and each round's order."""
    cache_dir: Path | None = None
    """Where to build (and later reuse) the benchmark knowledge base; default: inside --out."""
    ray_address: str | None = None
    """Ray cluster for the ray backends: `auto` (a running one) or unset to start a local instance for the run."""
    pool: PoolConfig = field(default_factory=PoolConfig)
    """How rayrag's pools (`ray:M`) are made and called, as in `rayrag train --pool.*` (`--pool.faiss_threads`,
    `--pool.coalesce_window_s`); the `ray-hf:M` pools keep the reference's behaviour."""
    floor_repeats: int = 5
    """Repeats of each in-process search setting (and of the GEMM) timed for the floor."""
    run_timeout: float = 1800.0
    """Seconds one (backend, workers) run may take before it is stopped with an error."""

    def worker_counts(self) -> list[int]:
        try:
            counts = [int(w) for w in self.workers.split(",") if w.strip()]
        except ValueError:
            raise RayragError(f"--workers {self.workers!r}: write comma-separated integers, e.g. 2,3,4") from None
        if not counts or min(counts) < 1:
            raise RayragError(f"--workers {self.workers!r}: each count must be at least 1")
        return sorted(set(counts))

    def backend_specs(self) -> list[BackendSpec]:
        specs = [BackendSpec.parse(b) for b in self.backends.split(",") if b.strip()]
        if not specs:
            raise RayragError("--backends: name at least one backend, e.g. local,pytorch,ray:2")
        if len(set(specs)) != len(specs):
            raise RayragError(f"--backends {self.backends!r}: a backend is named twice")
        return sorted(specs, key=lambda s: (BACKEND_KINDS.index(s.kind), s.actors))  # the table's order

    def validate(self) -> None:
        """Check every flag; raise `RayragError` naming the flag. Changes nothing."""
        self.worker_counts()
        self.backend_specs()
        for flag, value, low in (("--index_size", self.index_size, 1), ("--dim", self.dim, 1),
                                 ("--batch_size", self.batch_size, 1), ("--n_docs", self.n_docs, 1),
                                 ("--steps", self.steps, 1), ("--warmup_steps", self.warmup_steps, 1),
                                 ("--rounds", self.rounds, 1),
                                 ("--clusters", self.clusters, 0), ("--floor_repeats", self.floor_repeats, 1)):
            if value < low:
                raise RayragError(f"{flag} {value}: must be at least {low}")
        if self.index_type not in INDEX_TYPES:
            raise RayragError(f"--index_type {self.index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
        if self.n_docs > self.index_size:
            raise RayragError(f"--n_docs {self.n_docs}: more than the {self.index_size} passages of --index_size")
        if self.clusters > self.index_size:
            raise RayragError(f"--clusters {self.clusters}: more than the {self.index_size} passages of --index_size")
        if self.step_time < 0:
            raise RayragError(f"--step_time {self.step_time}: must be 0 or more seconds")
        if self.run_timeout <= 0:
            raise RayragError(f"--run_timeout {self.run_timeout}: must be positive")
        self.pool.validate()

    def resolved(self) -> BenchOptions:
        """A new `BenchOptions` with --clusters filled in (0: about sqrt(--index_size))."""
        return dataclasses.replace(self, clusters=self.n_clusters())

    def n_clusters(self) -> int:
        return self.clusters or max(1, int(round(self.index_size ** 0.5)))
