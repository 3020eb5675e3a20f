"""The `rayrag` command: picks the verb from argv, parses that verb's options (cli/parse.py), runs it.

Each verb is one module in this package (`bench retrieval` is cli/bench.py). Errors a user can
fix are one line, `rayrag VERB: error: ...`, and exit 2; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import import_module

from rayrag import __version__
from rayrag.errors import RayragError

VERBS = {
    "demo": "rayrag.cli.demo",
    "index": "rayrag.cli.index",
    "init-model": "rayrag.cli.init_model",
    "train": "rayrag.cli.train",
    "eval": "rayrag.cli.eval",
    "ask": "rayrag.cli.ask",
    "tune": "rayrag.cli.tune",
    "serve": "rayrag.cli.serve",
    "bench retrieval": "rayrag.cli.bench",
    "bench serve": "rayrag.cli.bench_serve",
}
TRAINING_VERBS = ("demo", "train", "tune")
"""Verbs that run Lightning (their logging is routed by `_route_lightning_logs`)."""
GROUPS = {"bench": "benchmarks: `bench retrieval` times local, pytorch and ray retrieval side by side; `bench serve` "
                   "load-tests `rayrag serve`"}
"""Verbs of two words: the help line of their first word."""


def _listing_parser(prog: str, words: dict[str, str], description: str, epilog: str = "",
                    metavar: str = "VERB") -> argparse.ArgumentParser:
    """A parser that only lists verbs (for --help, --version and a missing or unknown verb)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    if prog == "rayrag":
        parser.add_argument("--version", action="version", version=f"rayrag {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar=metavar, required=True)
    for word, help_text in words.items():
        sub.add_parser(word, help=help_text, add_help=False)
    return parser


def _help_line(verb: str) -> str:
    return GROUPS.get(verb) or import_module(VERBS[verb]).HELP


def pick_verb(argv: list[str]) -> tuple[str, list[str]]:
    """The verb `argv` names and the arguments after it; prints help or a usage error and exits otherwise."""
    first = argv[0] if argv else None
    if first in VERBS:
        return first, argv[1:]
    if first in GROUPS:
        rest = argv[1:]
        word = next((a for a in rest if not a.startswith("-")), None)
        if f"{first} {word}" in VERBS:
            rest.remove(word)
            return f"{first} {word}", rest
        subs = {v.split()[1]: import_module(m).HELP for v, m in VERBS.items() if v.startswith(first + " ")}
        _listing_parser(f"rayrag {first}", subs, GROUPS[first], metavar="BENCHMARK").parse_args(rest)
    words = {v.split()[0]: "" for v in VERBS}
    parser = _listing_parser(
        "rayrag", {w: _help_line(w) for w in words},
        "Fine-tune Retrieval-Augmented Generation models on your own knowledge base, with retrieval served by "
        "a pool of Ray actors.", "Start with `rayrag demo`; `rayrag VERB --help` explains each verb.")
    parser.parse_args(argv[:1])  # prints the help, the version or a usage error, and exits
    raise SystemExit(2)


def _setup_logging(debug: bool, quiet: bool, trains: bool = False) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if trains:
        _route_lightning_logs(level)
    for noisy in ("urllib3", "filelock", "fsspec", "datasets", "httpx", "torch.distributed", "faiss"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not debug:
        import warnings

        import datasets
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
        warnings.filterwarnings("ignore", module=r"lightning\..*")
        warnings.filterwarnings("ignore", category=FutureWarning)


def _route_lightning_logs(level: int) -> None:
    """Lightning's messages through the handler above, once, at the command's level. Importing `lightning` gives its
    logger a console handler of its own at INFO that also propagates to the root: every line printed twice, and
    printed under --quiet. Imported here, by the verbs that train (they import it anyway), to undo that."""
    import lightning  # noqa: F401  (installs the handler removed below)

    root = logging.getLogger("lightning")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(level)


def main(argv: list[str] | None = None) -> int:
    from rayrag.cli.parse import parse

    verb, rest = pick_verb(list(sys.argv[1:] if argv is None else argv))
    module = import_module(VERBS[verb])
    try:
        opts, common = parse(module, f"rayrag {verb}", rest)
    except argparse.ArgumentError as e:
        print(f"rayrag {verb}: error: {e}", file=sys.stderr)
        return 2
    try:
        opts.validate()  # before the logging set-up, which imports Lightning and transformers: a bad flag is told at once
        _setup_logging(common.debug, common.quiet, trains=verb in TRAINING_VERBS)
        return int(module.run(opts.resolved(), common.quiet) or 0)
    except RayragError as e:
        if common.debug:
            raise
        print(f"rayrag {verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rayrag {verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
