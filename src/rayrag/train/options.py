"""Options of `rayrag train`: the reference fine-tuning script's flags, plus Lightning's and rayrag's own.

Each field's docstring is its `--help` text. `resolved()` returns a copy with the reference's flags
applied (--gpus, --passages_path/--index_path); `validate()` checks without changing anything, and
every error names the flag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from rayrag.errors import RayragError
from rayrag.kb.layout import check_flags, from_pair
from rayrag.retrieval.ray.config import PoolConfig

LR_SCHEDULERS = ("linear", "cosine", "cosine_w_restarts", "polynomial", "constant")
BACKENDS = ("local", "pytorch", "ray")
LAUNCHERS = ("local", "ray")


@dataclass
class TrainOptions:
    """Fine-tune a RAG model (or a closed-book seq2seq baseline) with PyTorch Lightning."""

    data_dir: Path
    """Directory with train/val/test .source/.target (or .jsonl) files."""
    output_dir: Path
    """Run directory: checkpoints, best_model/, logs, metrics.json, predictions, profile."""
    model_name_or_path: Path
    """Model directory made by `rayrag init-model`, an earlier `rayrag train`'s best_model/, or any RAG directory
    saved by plain transformers (save_pretrained)."""
    model_type: str | None = None
    """rag_sequence | rag_token | bart | t5 | seq2seq (default: the model's). As in the reference, picks the class:
    any RAG checkpoint trains as rag_sequence or rag_token; a closed-book type on a RAG model is refused."""
    kb: Path | None = None
    """Knowledge base to retrieve from: a `rayrag index` directory, or a directory holding a Hugging Face RAG
    knowledge base (one `datasets` directory and one .faiss file) (default: the one the model records)."""
    index_name: str | None = None
    """Reference flag: `custom` (or unset) uses --passages_path/--index_path or --kb; hub indexes are not supported."""
    passages_path: Path | None = None
    """Reference flag: the passages directory of a Hugging Face RAG knowledge base (use_own_knowledge_dataset.py),
    with --index_path; a rayrag knowledge base's passages/ names its directory."""
    index_path: Path | None = None
    """Reference flag: the FAISS file of a Hugging Face RAG knowledge base, with --passages_path; a rayrag knowledge
    base's index.faiss names its directory."""
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
    eval_n_docs: int | None = None
    """Passages each validation and --do_predict answer is generated from (RAG; default: --n_docs). Training
    still marginalises over --n_docs passages, which is what trains the question encoder; answering from fewer
    (1: the best passage alone) keeps RAG-token from mixing several passages' words into one answer."""
    max_combined_length: int | None = None
    """Tokens of each generator input, "title / text // question", cut at the end (RAG; default: the model's
    max_combined_length, saved with the trained model)."""
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
    """Nodes of a multi-node DDP run started by hand (one process per node with its rank variables); with a Ray
    cluster use --launcher ray instead."""
    launcher: str = "local"
    """Who starts the training processes. local: this process (and Lightning's DDP processes with --devices N > 1);
    ray: Ray Train's TorchTrainer starts --num_workers workers (or --devices/--gpus when --num_workers is 0) on any
    node of the Ray cluster at --ray_address (`auto`; unset starts a local instance), with Ray Train's Lightning
    integration. --output_dir, --data_dir, the model and the knowledge base must be paths every node can read
    (shared storage); --output_dir also holds Ray Train's checkpoints (ray_train/)."""
    use_gpu: bool = False
    """--launcher ray: each worker asks Ray for one GPU and trains on it (--gpus N > 0 turns this on)."""
    cpus_per_worker: float = 0.5
    """--launcher ray: CPUs each worker asks Ray for (fractions allowed; 0.5 lets 2 workers and a retrieval pool
    share 2 cores). A job the cluster cannot hold is refused with the numbers that fit, never left waiting."""
    max_failures: int = 2
    """--launcher ray: how many times Ray Train restarts the workers after one dies (-1: without limit); each restart
    continues from the last checkpoint reported to Ray Train (every --save_every_n_steps steps and at every
    validation), so no optimizer step is lost or repeated."""
    distributed_retriever: str = "local"
    """Retrieval backend: local (index in each process) | pytorch (rank 0 serves) | ray (actor pool)."""
    num_retrieval_workers: int = 1
    """Ray backend: number of retrieval actors."""
    ray_address: str | None = None
    """Ray backend: `auto` (a running cluster), HOST:PORT, or unset/`local` to start a local instance."""
    pool: PoolConfig = field(default_factory=PoolConfig)
    """Ray backend: the pool of retrieval actors (--retrieval_timeout_s/--retrieval_max_restarts still work)."""
    profile: bool = False
    """Time every retrieval call on every rank: retrieval_profile.json in --output_dir."""
    resume: bool = False
    """Continue from --output_dir/checkpoints/last.ckpt."""
    num_workers: int = 0
    """DataLoader worker processes. With --launcher ray: the number of Ray Train workers, as in Ray's
    ScalingConfig(num_workers=...) (0: --devices, or --gpus), and each worker loads its batches in-process."""
    log_every_n_steps: int = 10
    """Log training metrics every N steps."""
    progress: bool = True
    """Show progress bars."""

    def validate(self) -> None:
        """Check flag values and combinations; raise `RayragError` naming the flag. Changes nothing."""
        _check_ranges(self)
        _check_choices(self)
        _check_gpus(self)
        _reference_kb(self)
        _check_ray(self)
        _check_launcher(self)
        if self.resume and not (Path(self.output_dir) / "checkpoints" / "last.ckpt").is_file():
            raise RayragError(
                f"--resume: no {Path(self.output_dir) / 'checkpoints' / 'last.ckpt'} to resume from; "
                "drop --resume to start a new run")

    def resolved(self) -> TrainOptions:
        """A new `TrainOptions` with the reference's flags applied: --gpus N is --accelerator gpu --devices N
        (0: --accelerator cpu), and --passages_path/--index_path naming a rayrag knowledge base's files set --kb to
        its directory (a Hugging Face RAG pair stays as given)."""
        _check_gpus(self)
        accelerator, devices = self.accelerator, self.devices
        if self.gpus is not None:
            accelerator, devices = ("gpu", self.gpus) if self.gpus > 0 else ("cpu", self.devices)
        use_gpu = self.use_gpu or (self.launcher == "ray" and accelerator in ("gpu", "cuda"))
        return dataclasses.replace(self, accelerator=accelerator, devices=devices, kb=_reference_kb(self),
                                   use_gpu=use_gpu, pool=dataclasses.replace(self.pool))

    def ray_workers(self) -> int:
        """--launcher ray: the Ray Train worker count, --num_workers or else --devices (after `resolved`, --gpus)."""
        return self.num_workers if self.num_workers > 0 else self.devices


def _check_ranges(o: TrainOptions) -> None:
    least = {"--train_batch_size": o.train_batch_size, "--eval_batch_size": o.eval_batch_size,
             "--max_source_length": o.max_source_length, "--max_target_length": o.max_target_length,
             "--val_max_target_length": o.val_max_target_length,
             "--test_max_target_length": o.test_max_target_length, "--num_train_epochs": o.num_train_epochs,
             "--devices": o.devices, "--gradient_accumulation_steps": o.gradient_accumulation_steps,
             "--eval_beams": o.eval_beams, "--num_retrieval_workers": o.num_retrieval_workers,
             "--num_nodes": o.num_nodes, "--log_every_n_steps": o.log_every_n_steps, "--n_docs": o.n_docs,
             "--eval_n_docs": o.eval_n_docs, "--max_combined_length": o.max_combined_length}
    at_least_minus_one = {"--n_train": o.n_train, "--n_val": o.n_val, "--n_test": o.n_test,
                          "--max_steps": o.max_steps, "--early_stopping_patience": o.early_stopping_patience}
    at_least_zero = {"--warmup_steps": o.warmup_steps, "--save_every_n_steps": o.save_every_n_steps,
                     "--num_workers": o.num_workers, "--gpus": o.gpus, "--weight_decay": o.weight_decay,
                     "--max_grad_norm": o.max_grad_norm, "--max_time_minutes": o.max_time_minutes}
    for low, checks in ((1, least), (-1, at_least_minus_one), (0, at_least_zero)):
        for flag, value in checks.items():
            if value is not None and value < low:
                raise RayragError(f"{flag} {value}: must be at least {low}")
    for flag, value in {"--learning_rate": o.learning_rate, "--adam_epsilon": o.adam_epsilon,
                        "--val_check_interval": o.val_check_interval}.items():
        if not value > 0:
            raise RayragError(f"{flag} {value}: must be positive")
    if o.question_encoder_lr is not None and o.question_encoder_lr < 0:
        raise RayragError(f"--question_encoder_lr {o.question_encoder_lr}: must be 0 (frozen) or more")
    if not 0.0 <= o.label_smoothing < 1.0:
        raise RayragError(f"--label_smoothing {o.label_smoothing}: must be in [0, 1)")
    for flag, value in {"--dropout": o.dropout, "--attention_dropout": o.attention_dropout}.items():
        if value is not None and not 0.0 <= value <= 1.0:
            raise RayragError(f"{flag} {value}: must be in [0, 1]")


def _check_choices(o: TrainOptions) -> None:
    if not o.do_train and not o.do_predict:
        raise RayragError("nothing to do: pass --do_train, --do_predict or both")
    if o.lr_scheduler not in LR_SCHEDULERS:
        raise RayragError(f"--lr_scheduler {o.lr_scheduler!r}: choose one of {', '.join(LR_SCHEDULERS)}")
    if o.distributed_retriever not in BACKENDS:
        raise RayragError(
            f"--distributed_retriever {o.distributed_retriever!r}: choose one of {', '.join(BACKENDS)}")
    if o.index_name not in (None, "custom"):
        raise RayragError(
            f"--index_name {o.index_name}: rayrag retrieves from your own knowledge base (`rayrag index`, or the "
            "Hugging Face RAG layout); pass --index_name custom with --passages_path/--index_path, or --kb")


def _check_gpus(o: TrainOptions) -> None:
    if o.gpus is not None and o.gpus > 0 and o.accelerator not in ("auto", "gpu", "cuda"):
        raise RayragError(f"--gpus {o.gpus} contradicts --accelerator {o.accelerator}; drop one")


def _reference_kb(o: TrainOptions) -> Path | None:
    """--kb, or the rayrag knowledge base directory whose files --passages_path/--index_path name (a Hugging Face
    RAG pair leaves --kb unset); refuses a contradiction. From the paths alone (kb/layout.py)."""
    check_flags(o.kb, o.passages_path, o.index_path)
    if o.kb is not None:
        return o.kb
    pair = from_pair(o.passages_path, o.index_path)
    return Path(pair.kb) if pair is not None and not pair.is_reference else None


def _check_ray(o: TrainOptions) -> None:
    """Flags of the ray backend: refused with other backends (compared with the defaults), then range-checked."""
    if o.distributed_retriever != "ray":
        default = PoolConfig()
        changed = [f"--pool.{f.name}" for f in dataclasses.fields(PoolConfig)
                   if getattr(o.pool, f.name) != getattr(default, f.name)]
        if o.num_retrieval_workers != TrainOptions.num_retrieval_workers:
            changed.insert(0, "--num_retrieval_workers")
        if changed:
            raise RayragError(f"{changed[0]} applies to --distributed_retriever ray, not "
                              f"{o.distributed_retriever}; drop it or choose ray")
    o.pool.validate("--pool.")
    if o.ray_address is not None and not _valid_ray_address(o.ray_address):
        raise RayragError(
            f"--ray_address {o.ray_address!r}: use auto (a cluster started with `ray start --head`), "
            "local (start a Ray instance for this run), HOST:PORT or ray://HOST:PORT")


def _valid_ray_address(address: str) -> bool:
    if address in ("auto", "local") or address.startswith("ray://"):
        return True
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit()


def _check_launcher(o: TrainOptions) -> None:
    """--launcher and the flags that belong to --launcher ray."""
    if o.launcher not in LAUNCHERS:
        raise RayragError(f"--launcher {o.launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    if o.launcher == "local":
        defaults = TrainOptions.__dataclass_fields__
        for name in ("use_gpu", "cpus_per_worker", "max_failures"):
            if getattr(o, name) != defaults[name].default:
                raise RayragError(f"--{name} applies to --launcher ray; drop it or add --launcher ray")
        return
    if not o.cpus_per_worker > 0:
        raise RayragError(f"--cpus_per_worker {o.cpus_per_worker}: must be more than 0")
    if o.max_failures < -1:
        raise RayragError(f"--max_failures {o.max_failures}: must be -1 (without limit) or more")
    if o.num_nodes != 1:
        raise RayragError(f"--num_nodes {o.num_nodes}: with --launcher ray, Ray places the workers on the cluster's "
                          "nodes; drop --num_nodes and give the worker count with --num_workers")
    if o.use_gpu and o.accelerator == "cpu":
        raise RayragError("--use_gpu contradicts --accelerator cpu; drop one")
    if o.gpus == 0 and o.use_gpu:
        raise RayragError("--use_gpu contradicts --gpus 0; drop one")
    if o.num_workers > 0 and o.devices > 1:
        raise RayragError(f"--num_workers {o.num_workers} and --devices {o.devices}: with --launcher ray both give "
                          "the worker count; drop --devices")
