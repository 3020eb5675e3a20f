"""Options of `rayrag train`: the reference fine-tuning script's flags, plus Lightning's and rayrag's own.

Each field's docstring is its `--help` text. The knowledge base (`--kb.*`), retrieval (`--retrieval.*`) and the Ray
cluster (`--cluster.*`) are parts shared with the other verbs, each checked beside its own definition; the
reference's flat spellings (--kb, --passages_path, --distributed_retriever, --num_retrieval_workers, --ray_address,
--pool.*, ...) reach them through cli/aliases.py. `resolved()` returns a copy with the reference's flags applied
(--gpus, --passages_path/--index_path); `validate()` checks without changing anything, and every error names the flag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rayrag.cluster.args import ClusterArgs
from rayrag.errors import RayragError
from rayrag.kb.args import KbArgs
from rayrag.model.options import ModelType
from rayrag.retrieval.options import RetrievalArgs

LrScheduler = Literal["linear", "cosine", "cosine_w_restarts", "polynomial", "constant"]
Accelerator = Literal["auto", "cpu", "gpu", "cuda"]
Launcher = Literal["local", "ray"]


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
    model_type: ModelType | None = None
    """Default: the model's. As in the reference, picks the class:
    any RAG checkpoint trains as rag_sequence or rag_token; a closed-book type on a RAG model is refused."""
    index_name: Literal["custom"] | None = None
    """Reference flag: `custom` (or unset) uses --passages_path/--index_path or --kb; hub indexes are not supported."""
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
    lr_scheduler: LrScheduler = "linear"
    """Learning-rate schedule after warm-up."""
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
    """Mixed precision: 16-bit on GPU, bfloat16 on a CPU that multiplies bfloat16 natively (AVX512-BF16, AMX); on
    other CPUs, where bfloat16 is emulated and many times slower, float32 with a warning."""
    gpus: int | None = None
    """Reference flag: number of GPUs (same as --accelerator gpu --devices N)."""
    accelerator: Accelerator = "auto"
    """Lightning accelerator."""
    devices: int = 1
    """Training processes (DDP when > 1; gloo on CPU)."""
    num_nodes: int = 1
    """Nodes of a multi-node DDP run started by hand (one process per node with its rank variables); with a Ray
    cluster use --launcher ray instead."""
    launcher: Launcher = "local"
    """Who starts the training processes. local: this process (and Lightning's DDP processes with --devices N > 1);
    ray: Ray Train's TorchTrainer starts --cluster.workers workers (default --devices, or --gpus) on any node of the
    Ray cluster at --cluster.address (`auto`; unset starts a local instance), with Ray Train's Lightning integration.
    --output_dir, --data_dir, the model and the knowledge base must be paths every node can read (shared storage);
    --output_dir also holds Ray Train's checkpoints (ray_train/)."""
    max_failures: int = 2
    """--launcher ray: how many times Ray Train restarts the workers after one dies (-1: without limit); each restart
    continues from the last checkpoint reported to Ray Train (every --save_every_n_steps steps and at every
    validation), so no optimizer step is lost or repeated."""
    kb: KbArgs = field(default_factory=KbArgs)
    """The knowledge base to retrieve from (default: the one the model records)."""
    retrieval: RetrievalArgs = field(default_factory=RetrievalArgs)
    """Where retrieval is served from."""
    cluster: ClusterArgs = field(default_factory=ClusterArgs)
    """The Ray cluster of --retrieval.backend ray and --launcher ray."""
    train_context_encoder: bool = False
    """Train the passage side too (end to end; the reference's --end2end): each step re-encodes the retrieved passages
    with a context encoder that learns with the question encoder and generator, and every --reindex_every steps a
    snapshot of it re-embeds the knowledge base in the background (on the Ray cluster with --cluster.address) while
    training goes on; every rank and retrieval actor switches to the new index at one step boundary. Writes
    OUTPUT_DIR/kb (the knowledge base re-embedded by the best model's context encoder, which best_model/ records
    and carries in best_model/context_encoder/)."""
    context_encoder_name: str | None = None
    """--train_context_encoder: the context encoder to start from (hub name, local directory or `minilm`; default:
    the one the model carries, else the knowledge base's own). One whose weights differ from those the knowledge
    base was embedded with re-embeds it before the first step."""
    context_encoder_lr: float | None = None
    """--train_context_encoder: peak learning rate of the context encoder (default: --learning_rate)."""
    reindex_every: int = 500
    """--train_context_encoder: start a re-index every N optimizer steps (the reference's --indexing_freq). The one
    started at step s is used from step s + N; if it is not done by then, training waits for it (logged with the
    refresh's time: raise N)."""
    reindex_workers: int = 1
    """--train_context_encoder with --cluster.address: Ray workers that embed the knowledge base (`index --ray`'s
    engine); without a cluster, one background process does."""
    reindex_threads: int = 1
    """--train_context_encoder: CPU threads of each re-index worker (at low priority, so training keeps its cores)."""
    index_gpus: int | None = None
    """Reference flag (rag-end2end-retriever): accepted and not used; rayrag re-indexes in the background (on Ray
    workers with --cluster.address and --cluster.use_gpu), not on GPUs it looks for."""
    gpu_order: str | None = None
    """Reference flag: accepted and not used (see --index_gpus)."""
    shard_dir: str | None = None
    """Reference flag: accepted and not used; each index generation is written to OUTPUT_DIR/index/."""
    profile: bool = False
    """Time every retrieval call on every rank: retrieval_profile.json in --output_dir."""
    resume: bool = False
    """Continue from --output_dir/checkpoints/last.ckpt."""
    num_workers: int = 0
    """DataLoader worker processes (the reference's flag). With --launcher ray and no --cluster.workers, the
    number of Ray Train workers, as before, and each worker loads its batches in-process."""
    log_every_n_steps: int = 10
    """Log training metrics every N steps."""
    progress: bool = True
    """Show progress bars."""

    def validate(self) -> None:
        """Check flag values and combinations; raise `RayragError` naming the flag. Changes nothing."""
        _check_ranges(self)
        if not self.do_train and not self.do_predict:
            raise RayragError("nothing to do: pass --do_train, --do_predict or both")
        _check_gpus(self)
        self.kb.validate()
        self.retrieval.validate()
        self.cluster.validate()
        _check_launcher(self)
        _check_context(self)
        if self.resume and not (Path(self.output_dir) / "checkpoints" / "last.ckpt").is_file():
            raise RayragError(
                f"--resume: no {Path(self.output_dir) / 'checkpoints' / 'last.ckpt'} to resume from; "
                "drop --resume to start a new run")

    def resolved(self) -> TrainOptions:
        """A new `TrainOptions` with the reference's flags applied: --gpus N is --accelerator gpu --devices N
        (0: --accelerator cpu); --passages_path/--index_path naming a rayrag knowledge base's files become --kb, its
        directory (a Hugging Face pair stays as given); with --launcher ray, the worker count and request filled in
        (--cluster.workers: given, else the older --num_workers, else --devices; 0.5 CPU each; a GPU each on GPUs)."""
        _check_gpus(self)
        accelerator, devices = self.accelerator, self.devices
        if self.gpus is not None:
            accelerator, devices = ("gpu", self.gpus) if self.gpus > 0 else ("cpu", self.devices)
        cluster = dataclasses.replace(self.cluster)
        if self.launcher == "ray":
            cluster.workers = cluster.workers or (self.num_workers if self.num_workers > 0 else devices)
            cluster.cpus_per_worker = cluster.cpus_per_worker or 0.5
            cluster.use_gpu = cluster.use_gpu or accelerator in ("gpu", "cuda")
        return dataclasses.replace(self, accelerator=accelerator, devices=devices, kb=self.kb.resolved(),
                                   retrieval=self.retrieval.copy(), cluster=cluster)

    def absolute(self) -> TrainOptions:
        """A copy with every path absolute, for processes that run in another directory (Ray Train workers, Tune
        trials). A model name that is no local path (a hub name) stays as it is."""
        model = Path(self.model_name_or_path)
        return dataclasses.replace(
            self, data_dir=Path(self.data_dir).expanduser().resolve(),
            output_dir=Path(self.output_dir).expanduser().resolve(), kb=self.kb.absolute(),
            model_name_or_path=model.expanduser().resolve() if model.expanduser().exists() else model)


def _check_ranges(o: TrainOptions) -> None:
    least = {"--train_batch_size": o.train_batch_size, "--eval_batch_size": o.eval_batch_size,
             "--max_source_length": o.max_source_length, "--max_target_length": o.max_target_length,
             "--val_max_target_length": o.val_max_target_length,
             "--test_max_target_length": o.test_max_target_length, "--num_train_epochs": o.num_train_epochs,
             "--devices": o.devices, "--gradient_accumulation_steps": o.gradient_accumulation_steps,
             "--eval_beams": o.eval_beams, "--num_nodes": o.num_nodes, "--log_every_n_steps": o.log_every_n_steps,
             "--n_docs": o.n_docs, "--eval_n_docs": o.eval_n_docs, "--max_combined_length": o.max_combined_length}
    at_least_minus_one = {"--n_train": o.n_train, "--n_val": o.n_val, "--n_test": o.n_test,
                          "--max_steps": o.max_steps, "--early_stopping_patience": o.early_stopping_patience,
                          "--max_failures": o.max_failures}
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


def _check_context(o: TrainOptions) -> None:
    """The end-to-end flags: ranges, and refusal of those that need --train_context_encoder without it."""
    for flag, value in {"--reindex_every": o.reindex_every, "--reindex_workers": o.reindex_workers,
                        "--reindex_threads": o.reindex_threads}.items():
        if value < 1:
            raise RayragError(f"{flag} {value}: must be at least 1")
    if o.context_encoder_lr is not None and o.context_encoder_lr < 0:
        raise RayragError(f"--context_encoder_lr {o.context_encoder_lr}: must be 0 (frozen) or more")
    if not o.train_context_encoder:
        given = [flag for flag, set_ in (("--context_encoder_name", o.context_encoder_name is not None),
                                         ("--context_encoder_lr", o.context_encoder_lr is not None)) if set_]
        if given:
            raise RayragError(f"{given[0]} applies to --train_context_encoder; add it or drop the flag")


def reference_index_notes(o: TrainOptions) -> list[str]:
    """One line for each of rag-end2end-retriever's GPU-scheduling flags given: what rayrag does instead."""
    notes = []
    if o.index_gpus is not None or o.gpu_order is not None:
        notes.append("--index_gpus/--gpu_order: not used; rayrag re-indexes in a background process, or on Ray "
                     "workers with --cluster.address (--reindex_workers, --cluster.use_gpu), while training goes on")
    if o.shard_dir is not None:
        notes.append("--shard_dir: not used; each index generation is written to OUTPUT_DIR/index/ and the final "
                     "one to OUTPUT_DIR/kb")
    return notes


def _check_gpus(o: TrainOptions) -> None:
    if o.gpus is not None and o.gpus > 0 and o.accelerator not in ("auto", "gpu", "cuda"):
        raise RayragError(f"--gpus {o.gpus} contradicts --accelerator {o.accelerator}; drop one")


def _check_launcher(o: TrainOptions) -> None:
    """The flags that belong to --launcher ray, and the worker count's spellings: flags that agree are no conflict
    (the seed's --gpus 2 or --devices 2 beside --cluster.workers 2), flags that disagree are refused."""
    if o.launcher == "local":
        given = o.cluster.given + (["--max_failures"] if o.max_failures != TrainOptions.max_failures else [])
        if given:
            raise RayragError(f"{given[0]} applies to --launcher ray; drop it or add --launcher ray")
        return
    if o.num_nodes != 1:
        raise RayragError(f"--num_nodes {o.num_nodes}: with --launcher ray, Ray places the workers on the cluster's "
                          "nodes; drop --num_nodes and give the worker count with --cluster.workers")
    if o.cluster.use_gpu and o.accelerator == "cpu":
        raise RayragError("--cluster.use_gpu contradicts --accelerator cpu; drop one")
    if o.gpus == 0 and o.cluster.use_gpu:
        raise RayragError("--cluster.use_gpu contradicts --gpus 0; drop one")
    counts = {flag: n for flag, n in (("--cluster.workers", o.cluster.workers),
                                      ("--num_workers", o.num_workers or None),
                                      ("--gpus", o.gpus or None), ("--devices", o.devices if o.devices > 1 else None))
              if n is not None}
    (f1, n1), *rest = counts.items() or [("", 0)]
    differs = next(((f, n) for f, n in rest if n != n1), None)
    if differs is not None:
        raise RayragError(f"{f1} {n1} and {differs[0]} {differs[1]}: with --launcher ray both give the worker count; "
                          "drop one or make them agree")
