"""Search `rayrag train`'s hyperparameters with Ray Tune; every trial retrieves from one service.

Takes every `rayrag train` flag (fixed for all trials) plus a search space: a YAML/JSON file
(--space) mapping train options to distributions, and/or inline flags for the common knobs
(--search.learning_rate, --search.n_docs, ...). Distributions: loguniform, uniform, randint
(high bound excluded, as in Ray Tune), choice, grid. With --distributed_retriever ray the
search opens one pool of actors before the first trial and every trial attaches to it by name.
ASHA (the default --scheduler) stops trials whose validation EM (reported every
--val_check_interval) falls behind at each rung; fifo runs every trial to its end. A failed
trial is recorded with its error and the search goes on; Ctrl-C stops the trials and the pool,
and --resume continues the search without running a finished trial again.

Writes to --output_dir: trials.csv and trials.md (config, steps, best validation EM/F1,
status), trials.png (validation EM against steps, early stops marked), best_model/ (a model
directory for `rayrag eval` and `rayrag ask`), best_trial.json, config.yaml, space.json,
[memory.json], and Ray Tune's search/ (a directory per trial).

Example:
  rayrag tune --data_dir data/ --output_dir runs/search --model_name_or_path model-init/ \\
      --space space.yaml --num_samples 8 --max_concurrent_trials 2 --val_check_interval 25 \\
      --max_steps 200 --distributed_retriever ray --num_retrieval_workers 1
  rayrag tune --output_dir runs/search ... --search.learning_rate loguniform:1e-5,3e-4 --search.n_docs choice:2,3
  rayrag tune --config runs/search/config.yaml --resume
"""

from __future__ import annotations

from rayrag.cli import train
from rayrag.cli.aliases import leaves, negations, under
from rayrag.tune.options import TuneOptions

HELP = "search hyperparameters with Ray Tune (ASHA), all trials sharing one retrieval pool"
OPTIONS = TuneOptions
ALIASES = {
    **{f"--{name}": f"--train.{name}" for name in leaves(train.OPTIONS)},  # every train flag as in `rayrag train`
    **under("train.", train.ALIASES),  # ... and its older spellings: --kb, --distributed_retriever, --no-progress
    **negations(TuneOptions),  # --no-pool_per_trial, --no-memory_report
}


def run(opts: TuneOptions, quiet: bool) -> int:
    from rayrag.tune.search import run_search

    outcome = run_search(opts)
    print((outcome.out / "trials.md").read_text(encoding="utf-8"))
    if outcome.best_model is not None:
        print(f"best model: {outcome.best_model} (rayrag eval --model {outcome.best_model} ...)")
    print(f"results: {outcome.out / 'trials.csv'}, {outcome.out / 'trials.md'}, {outcome.out / 'trials.png'}")
    if outcome.ended != "complete":
        print(f"the search did not finish ({outcome.ended}): continue it with `rayrag tune --config "
              f"{outcome.out / 'config.yaml'} --resume`")
    return 130 if outcome.ended == "interrupted" else 0
