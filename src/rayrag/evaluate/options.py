"""Options of `rayrag eval` (score a model on a split) and `rayrag ask` (answer questions).

Both nest the shared parts a verb that retrieves needs: the knowledge base (`--kb.*`: --kb, or the reference's
--passages_path/--index_path), retrieval (`--retrieval.*`: any backend, e.g. a pool of Ray actors with
--distributed_retriever ray) and the Ray cluster's address (`--cluster.address`, spelled --ray_address)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from rayrag.cluster.args import ClusterArgs
from rayrag.errors import RayragError
from rayrag.kb.args import KbArgs
from rayrag.model.options import RagType
from rayrag.retrieval.options import RetrievalArgs


def _check_parts(kb: KbArgs, retrieval: RetrievalArgs, cluster: ClusterArgs) -> None:
    kb.validate()
    retrieval.validate()
    cluster.validate()
    if cluster.given:
        raise RayragError(f"{cluster.given[0]}: answering starts no Ray workers of its own (the retrieval pool is "
                          "--retrieval.num_workers); drop it")


def _check_generation(n_docs: int | None, num_beams: int, max_length: int) -> None:
    if n_docs is not None and n_docs < 1:
        raise RayragError(f"--n_docs {n_docs}: must be at least 1")
    for flag, value in (("--num_beams", num_beams), ("--max_length", max_length)):
        if value < 1:
            raise RayragError(f"{flag} {value}: must be at least 1")


@dataclass
class EvalOptions:
    """Options of `rayrag eval`."""

    model: Path
    """Model directory (init-model or train output, or a RAG directory saved by plain transformers)."""
    data_dir: Path
    """Directory with SPLIT.source/.target or SPLIT.jsonl."""
    split: str = "test"
    """Split to evaluate."""
    model_type: RagType | None = None
    """Load a RAG checkpoint as this class (default: as saved)."""
    out: Path | None = None
    """Where to write predictions, metrics and SPLIT_config.yaml (default: MODEL/eval)."""
    n: int = -1
    """Evaluate the first N examples (-1: all)."""
    n_docs: int | None = None
    """Passages per question (default: the model's)."""
    batch_size: int = 16
    """Questions per batch."""
    num_beams: int = 1
    """Beams for generation."""
    max_length: int = 25
    """Maximum answer length in tokens."""
    kb: KbArgs = field(default_factory=KbArgs)
    """The knowledge base to retrieve from (default: the model's)."""
    retrieval: RetrievalArgs = field(default_factory=RetrievalArgs)
    """Where retrieval is served from (default: the index mapped in this process)."""
    cluster: ClusterArgs = field(default_factory=ClusterArgs)
    """The Ray cluster of --retrieval.backend ray (its address)."""

    def validate(self) -> None:
        """Check every flag; raise `RayragError` naming the flag. Changes nothing."""
        _check_generation(self.n_docs, self.num_beams, self.max_length)
        _check_parts(self.kb, self.retrieval, self.cluster)
        if self.batch_size < 1:
            raise RayragError(f"--batch_size {self.batch_size}: must be at least 1")
        if self.n < -1:
            raise RayragError(f"--n {self.n}: must be -1 (all) or more")
        if not self.split:
            raise RayragError("--split: name a split of --data_dir, e.g. test")

    def resolved(self) -> EvalOptions:
        """A new `EvalOptions` with --out filled in (MODEL/eval)."""
        return dataclasses.replace(self, out=self.out if self.out is not None else Path(self.model) / "eval")


@dataclass
class AskOptions:
    """Options of `rayrag ask`."""

    model: Path
    """Model directory (init-model or train output, or a RAG directory saved by plain transformers)."""
    questions: list[str] = field(default_factory=list)
    """Questions to answer (on the command line: the arguments that are not flags)."""
    file: Path | None = None
    """A file of questions, one per line."""
    model_type: RagType | None = None
    """Load a RAG checkpoint as this class (default: as saved)."""
    n_docs: int | None = None
    """Passages per question (default: the model's)."""
    num_beams: int = 1
    """Beams for generation."""
    max_length: int = 25
    """Maximum answer length in tokens."""
    json: bool = False
    """Print one JSON object per question."""
    kb: KbArgs = field(default_factory=KbArgs)
    """The knowledge base to retrieve from (default: the model's)."""
    retrieval: RetrievalArgs = field(default_factory=RetrievalArgs)
    """Where retrieval is served from (default: the index mapped in this process)."""
    cluster: ClusterArgs = field(default_factory=ClusterArgs)
    """The Ray cluster of --retrieval.backend ray (its address)."""

    def validate(self) -> None:
        """Check every flag; raise `RayragError` naming the flag. Changes nothing."""
        if not self.questions and self.file is None:
            raise RayragError("no questions: give them as arguments or with --file FILE")
        if self.file is not None and not Path(self.file).is_file():
            raise RayragError(f"--file {self.file}: no such file")
        _check_generation(self.n_docs, self.num_beams, self.max_length)
        _check_parts(self.kb, self.retrieval, self.cluster)

    def resolved(self) -> AskOptions:
        """A new `AskOptions`; nothing here has a default that depends on other flags."""
        return dataclasses.replace(self, questions=list(self.questions))
