"""Options of `rayrag train`: the reference fine-tuning script's flags, plus Lightning's and rayrag's own.

Each field's docstring is its `--help` text; `validate` runs once, at the edge, and names the flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rayrag.errors import RayragError

LR_SCHEDULERS = ("linear", "cosine", "cosine_w_restarts", "polynomial", "constant")
BACKENDS = ("local", "pytorch", "ray")


@dataclass
class TrainOptions:
    """Fine-tune a RAG model (or a closed-book seq2seq baseline) with PyTorch Lightning."""

    data_dir: Path
    """Directory with train/val/test .source/.target (or .jsonl) files."""
    output_dir: Path
    """Run directory: checkpoints, best_model/, logs, metrics.json, predictions, profile."""
    model_name_or_path: Path
    """Model directory made by `rayrag init-model` (or an earlier `rayrag train`'s best_model/)."""
    model_type: str | None = None
    """rag_sequence | rag_token | bart | t5 | seq2seq; checked against the model directory (default: read from it)."""
    kb: Path | None = None
    """Knowledge base directory to retrieve from (default: the one the model was built with)."""
    index_name: str | None = None
    """Reference flag: `custom` (or unset) uses --passages_path/--index_path or --kb; hub indexes are not supported."""
    passages_path: Path | None = None
    """Reference flag: a knowledge base's passages/ directory (its parent is used as --kb)."""
    index_path: Path | None = None
    """Reference flag: a knowledge base's index.faiss (its parent is used as --kb)."""
    do_train: bool = False
    """Train."""
    do_predict: bool = False
    """After training (or alone), predict the test split with the best model: test_generations.txt and metrics.json."""
    n_train: int = -1
    """Use the first N training examples (-1: all)."""
    n_val: int = -1
    """Use the first N validation examples (-1: all)."""
    n_test: int = -1
    """Use the first N test examples (-1: all)."""
    seed: int = 42
    """Random seed for model, data order and dropout."""
    train_batch_size: int = 8
    """Questions per training step per process."""
    eval_batch_size: int = 16
    """Questions per generation batch in validation and prediction."""
    max_source_length: int = 128
    """Maximum question length in tokens."""
    max_target_length: int = 25
    """Maximum answer length in tokens (training)."""
    val_max_target_length: int = 25
    """Maximum generated answer length in validation."""
    test_max_target_length: int = 25
    """Maximum generated answer length in prediction."""
    n_docs: int | None = None
    """Passages retrieved per question (default: the model's n_docs)."""
    eval_beams: int = 1
    """Beams for generation in validation and prediction."""
    label_smoothing: float = 0.0
    """Label smoothing epsilon."""
    dropout: float | None = None
    """Override the generator's dropout."""
    attention_dropout: float | None = None
    """Override the generator's attention dropout."""
    learning_rate: float = 3e-5
    """Peak learning rate of AdamW."""
    question_encoder_lr: float | None = None
    """Peak learning rate of a RAG model's question encoder (default: --learning_rate). The index holds
    passage vectors made by the original encoder, so a question encoder that moves fast stops finding the
    passages: give it a lower rate when the generator's is high (e.g. 1e-5 with 2e-4)."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and LayerNorm)."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float = 0.1
    """Clip gradients to this norm (0: no clipping)."""
    lr_scheduler: str = "linear"
    """Learning-rate schedule after warm-up: linear | cosine | cosine_w_restarts | polynomial | constant."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    num_train_epochs: int = 3
    """Training epochs."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run all epochs)."""
    max_time_minutes: float = 0.0
    """Stop training after this many minutes (0: no limit)."""
    gradient_accumulation_steps: int = 1
    """Accumulate gradients over this many batches per optimizer step."""
    val_check_interval: float = 1.0
    """Validate every fraction of an epoch (<= 1.0) or every N training steps (> 1, counted across epochs)."""
    save_every_n_steps: int = 0
    """Also write checkpoints/last.ckpt every N optimizer steps, for --resume after a crash (0: at validation)."""
    early_stopping_patience: int = -1
    """Stop when validation EM has not improved for this many validations (-1: never)."""
    freeze_embeddings: bool = False
    """Keep the word embeddings of the question encoder and generator fixed (faster on CPU)."""
    fp16: bool = False
    """Mixed precision: 16-bit on GPU, bfloat16 on CPU."""
    gpus: int | None = None
    """Reference flag: number of GPUs (same as --accelerator gpu --devices N)."""
    accelerator: str = "auto"
    """Lightning accelerator: auto | cpu | gpu | cuda."""
    devices: int = 1
    """Training processes (DDP when > 1; gloo on CPU)."""
    num_nodes: int = 1
    """Nodes of a multi-node DDP run."""
    distributed_retriever: str = "local"
    """Retrieval backend: local (index in each process) | pytorch (rank 0 serves) | ray (actor pool)."""
    num_retrieval_workers: int = 1
    """Ray backend: number of retrieval actors."""
    ray_address: str | None = None
    """Ray backend: `auto` (a running cluster), HOST:PORT, or unset/`local` to start a local instance."""
    retrieval_timeout_s: float = 120.0
    """Ray backend: longest wait for one retrieval actor's answer; a call past it is re-sent to another actor."""
    retrieval_max_restarts: int = 4
    """Ray backend: times Ray restarts each retrieval actor that dies (-1: without limit); once an actor is
    past it and the others fail too, training stops with a one-line error."""
    profile: bool = False
    """Time every retrieval call on every rank: retrieval_profile.json in --output_dir."""
    resume: bool = False
    """Continue from --output_dir/checkpoints/last.ckpt."""
    num_workers: int = 0
    """DataLoader worker processes."""
    log_every_n_steps: int = 10
    """Log training metrics every N steps."""
    progress: bool = True
    """Show progress bars."""

    def validate(self) -> None:
        """Check flag values and combinations; raise `RayragError` naming the flag."""
        positive = {"--train_batch_size": self.train_batch_size, "--eval_batch_size": self.eval_batch_size,
                    "--max_source_length": self.max_source_length, "--max_target_length": self.max_target_length,
                    "--num_train_epochs": self.num_train_epochs, "--devices": self.devices,
                    "--gradient_accumulation_steps": self.gradient_accumulation_steps,
                    "--eval_beams": self.eval_beams, "--num_retrieval_workers": self.num_retrieval_workers,
                    "--num_nodes": self.num_nodes}
        for flag, value in positive.items():
            if value < 1:
                raise RayragError(f"{flag} {value}: must be at least 1")
        if not self.do_train and not self.do_predict:
            raise RayragError("nothing to do: pass --do_train, --do_predict or both")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise RayragError(f"--lr_scheduler {self.lr_scheduler!r}: choose one of {', '.join(LR_SCHEDULERS)}")
        if self.distributed_retriever not in BACKENDS:
            raise RayragError(
                f"--distributed_retriever {self.distributed_retriever!r}: choose one of {', '.join(BACKENDS)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise RayragError(f"--label_smoothing {self.label_smoothing}: must be in [0, 1)")
        if self.learning_rate <= 0:
            raise RayragError(f"--learning_rate {self.learning_rate}: must be positive")
        if self.question_encoder_lr is not None and self.question_encoder_lr < 0:
            raise RayragError(f"--question_encoder_lr {self.question_encoder_lr}: must be 0 (frozen) or more")
        if self.n_docs is not None and self.n_docs < 1:
            raise RayragError(f"--n_docs {self.n_docs}: must be at least 1")
        if self.gpus is not None:
            if self.gpus < 0:
                raise RayragError(f"--gpus {self.gpus}: must be 0 or more")
            if self.gpus > 0 and self.accelerator not in ("auto", "gpu", "cuda"):
                raise RayragError(f"--gpus {self.gpus} contradicts --accelerator {self.accelerator}; drop one")
            if self.gpus > 0:
                self.accelerator, self.devices = "gpu", self.gpus
            else:
                self.accelerator = "cpu"
        if self.index_name not in (None, "custom"):
            raise RayragError(
                f"--index_name {self.index_name}: rayrag retrieves from knowledge bases built with "
                "`rayrag index`; pass --index_name custom with --passages_path/--index_path, or --kb")
        derived = {p.parent for p in (self.passages_path, self.index_path) if p is not None}
        if len(derived) > 1:
            raise RayragError(
                f"--passages_path {self.passages_path} and --index_path {self.index_path} are in different "
                "directories; both must be inside one knowledge base directory")
        if derived:
            kb = derived.pop()
            if self.kb is not None and Path(self.kb).resolve() != kb.resolve():
                raise RayragError(f"--kb {self.kb} contradicts --passages_path/--index_path in {kb}; drop one")
            self.kb = kb
        if self.resume and not (Path(self.output_dir) / "checkpoints" / "last.ckpt").is_file():
            raise RayragError(
                f"--resume: no {Path(self.output_dir) / 'checkpoints' / 'last.ckpt'} to resume from; "
                "drop --resume to start a new run")
        ray_only = {"--num_retrieval_workers": self.num_retrieval_workers != 1,
                    "--retrieval_timeout_s": self.retrieval_timeout_s != 120.0,
                    "--retrieval_max_restarts": self.retrieval_max_restarts != 4}
        for flag, changed in ray_only.items():
            if changed and self.distributed_retriever != "ray":
                raise RayragError(f"{flag} applies to --distributed_retriever ray, not "
                                  f"{self.distributed_retriever}; drop it or choose ray")
        if not self.retrieval_timeout_s > 0:
            raise RayragError(f"--retrieval_timeout_s {self.retrieval_timeout_s}: must be positive")
        if self.retrieval_max_restarts < -1:
            raise RayragError(f"--retrieval_max_restarts {self.retrieval_max_restarts}: must be -1 (no limit) or more")
        if self.ray_address is not None and not _valid_ray_address(self.ray_address):
            raise RayragError(
                f"--ray_address {self.ray_address!r}: use auto (a cluster started with `ray start --head`), "
                "local (start a Ray instance for this run), HOST:PORT or ray://HOST:PORT")


def _valid_ray_address(address: str) -> bool:
    if address in ("auto", "local") or address.startswith("ray://"):
        return True
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit()
