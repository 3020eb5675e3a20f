"""Options of `rayrag tune`: the `rayrag train` options every trial starts from, the search space, and the search.

`TuneOptions` holds a `TrainOptions` (`--train.*`; every train flag also keeps its own spelling, so a train command
line becomes a search by changing the verb and adding a space). `validate()` checks everything before anything
starts: the fixed options as `rayrag train` would, the space (file and inline flags, every value a distribution can
produce), and the search's own flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rayrag.errors import RayragError
from rayrag.train.options import TrainOptions

SEARCH_DIR = "search"
"""Ray Tune's experiment directory inside --output_dir (trial directories, checkpoints, restore state)."""


@dataclass
class InlineSpace:
    """The common knobs, searched from the command line. Each takes a distribution as in a --space file
    (`'{loguniform: [1.0e-5, 3.0e-4]}'`) or as KIND:V1,V2 (`loguniform:1e-5,3e-4`, `choice:2,3`); it replaces the
    file's entry for the same option."""

    learning_rate: str | None = None
    """Peak learning rate, e.g. loguniform:1e-5,3e-4."""
    question_encoder_lr: str | None = None
    """The question encoder's peak learning rate, e.g. choice:0,1e-5."""
    context_encoder_lr: str | None = None
    """With --train.train_context_encoder: the context encoder's peak learning rate, e.g. loguniform:1e-6,1e-4."""
    reindex_every: str | None = None
    """With --train.train_context_encoder: steps between re-indexes, e.g. choice:100,200."""
    n_docs: str | None = None
    """Passages retrieved per question, e.g. choice:2,3."""
    dropout: str | None = None
    """The generator's dropout, e.g. uniform:0,0.2."""
    label_smoothing: str | None = None
    """Label smoothing epsilon, e.g. uniform:0,0.1."""
    warmup_steps: str | None = None
    """Linear warm-up steps, e.g. randint:0,50 (50 excluded)."""
    lr_scheduler: str | None = None
    """Learning-rate schedule, e.g. choice:linear,constant."""
    train_batch_size: str | None = None
    """Questions per step, e.g. choice:8,16."""


@dataclass
class TuneOptions:
    """Search `rayrag train`'s hyperparameters with Ray Tune; every trial retrieves from one service."""

    train: TrainOptions
    """The `rayrag train` options every trial starts from (each train flag works as in `rayrag train`: --data_dir,
    --kb, --distributed_retriever, ...). Here --output_dir is the search's directory: trials.csv, trials.md,
    trials.png, best_model/, config.yaml, and Ray Tune's search/; --resume continues the interrupted search in it
    (Ray Tune's restore: finished and failed trials are kept as they are, unfinished ones continue from their last
    checkpoint; the space comes from the first run); every trial trains (--do_train is implied)."""
    space: Path | None = None
    """Search space: a YAML or JSON file mapping train options to distributions, e.g.
    `learning_rate: {loguniform: [1.0e-5, 3.0e-4]}` (distributions: loguniform, uniform, randint, choice, grid)."""
    search: InlineSpace = field(default_factory=InlineSpace)
    """Search space for common knobs, on the command line (--search.learning_rate loguniform:1e-5,3e-4)."""
    num_samples: int = 8
    """Trials to sample (with grid values: samples per grid point, as in Ray Tune)."""
    max_concurrent_trials: int = 0
    """Trials running at once (0: as many as the resources per trial allow)."""
    cpus_per_trial: float = 1.0
    """CPUs each trial reserves (fractions allowed: 0.5 runs two trials per core)."""
    gpus_per_trial: float = 0.0
    """GPUs each trial reserves (fractions allowed: 0.25 shares one GPU among four trials)."""
    time_budget_minutes: float = 0.0
    """Stop the whole search after this many minutes (0: no limit); trials still running are stopped."""
    scheduler: Literal["asha", "fifo"] = "asha"
    """asha: stop trials whose validation EM falls behind at each rung; fifo: run every trial to its end."""
    grace_period: int = 1
    """asha: validations every trial gets before it can be stopped (the first rung)."""
    reduction_factor: float = 2.0
    """asha: the share of trials that go on at each rung is 1 / this."""
    pool_per_trial: bool = False
    """Each trial opens its own retrieval service (what a naive search does), instead of all trials sharing the
    one the search opens; for comparison (memory, start-up)."""
    memory_report: bool = False
    """Sample the memory of the processes that hold the knowledge base while trials run (memory.json);
    with a private local Ray instance only."""

    @property
    def output_dir(self) -> Path:
        """The search's directory (--output_dir)."""
        return Path(self.train.output_dir)

    @property
    def resume(self) -> bool:
        """Whether to continue the search in --output_dir (--resume)."""
        return self.train.resume

    def validate(self) -> None:
        """Check the search's flags, the fixed train options and the space; raise `RayragError` naming the flag,
        file or key. Changes nothing."""
        _check_search_flags(self)
        trial = self.trial_options(self.output_dir / SEARCH_DIR / "check")
        trial.validate()
        search = self.output_dir / SEARCH_DIR
        if self.resume:
            if not search.is_dir():
                raise RayragError(f"--resume: no search in {search} to continue; drop --resume to start one")
            return
        if search.exists():
            raise RayragError(f"--output_dir {self.output_dir}: holds a search already ({search}); pass --resume to "
                              "continue it, or choose another --output_dir")
        from rayrag.tune.space import build_space, check_values

        dims = build_space(self.space, self.inline_space())
        if not dims:
            raise RayragError("nothing to search: give --space FILE or an inline --search.OPTION distribution")
        check_values(dims, trial)

    def resolved(self) -> TuneOptions:
        """A new `TuneOptions` with the train options resolved as `rayrag train` resolves them."""
        return dataclasses.replace(self, train=self.train.resolved(), search=dataclasses.replace(self.search))

    def inline_space(self) -> dict[str, str | None]:
        """The inline flags: option -> distribution text (None where not given)."""
        return dataclasses.asdict(self.search)

    def trial_options(self, output_dir: Path) -> TrainOptions:
        """The `rayrag train` options every trial starts from (before its sampled values): this search's fixed
        options, paths absolute (trials run in their own directories), writing into `output_dir`."""
        return dataclasses.replace(self.train.absolute(), output_dir=Path(output_dir).resolve(), do_train=True,
                                   do_predict=False, resume=False, progress=False)


def _check_search_flags(o: TuneOptions) -> None:
    t = o.train
    if t.do_predict:
        raise RayragError("--do_predict: a search trains only; score the best trial's model with "
                          "`rayrag eval --model OUTPUT_DIR/best_model`")
    if t.launcher != "local":
        raise RayragError(f"--launcher {t.launcher}: Ray Tune starts the trials, each one training process; drop "
                          "--launcher")
    many = {"--devices": t.devices, "--num_nodes": t.num_nodes, "--gpus": t.gpus}
    for flag, value in many.items():
        if value is not None and value > 1:
            raise RayragError(f"{flag} {value}: a trial runs one training process; give each trial its resources with "
                              "--cpus_per_trial and --gpus_per_trial, and run trials side by side with "
                              "--max_concurrent_trials")
    if o.scheduler not in ("asha", "fifo"):
        raise RayragError(f"--scheduler {o.scheduler!r}: choose asha or fifo")
    least = {"--num_samples": (o.num_samples, 1), "--max_concurrent_trials": (o.max_concurrent_trials, 0),
             "--gpus_per_trial": (o.gpus_per_trial, 0), "--time_budget_minutes": (o.time_budget_minutes, 0),
             "--grace_period": (o.grace_period, 1)}
    for flag, (value, low) in least.items():
        if value < low:
            raise RayragError(f"{flag} {value}: must be at least {low}")
    if not o.cpus_per_trial > 0:
        raise RayragError(f"--cpus_per_trial {o.cpus_per_trial}: must be above 0 (fractions allowed, e.g. 0.5)")
    if not o.reduction_factor > 1:
        raise RayragError(f"--reduction_factor {o.reduction_factor}: must be above 1 (e.g. 2: half go on per rung)")
    if o.gpus_per_trial > 0 and t.accelerator == "cpu":
        raise RayragError(f"--gpus_per_trial {o.gpus_per_trial} contradicts --accelerator cpu; drop one")
