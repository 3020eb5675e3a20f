"""The `rayrag` command: one verb per module in this package."""

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
    "bench": "rayrag.cli.bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayrag",
        description="Fine-tune Retrieval-Augmented Generation models on your own knowledge base, with "
                    "retrieval served by a pool of Ray actors.",
        epilog="Start with `rayrag demo`; `rayrag VERB --help` explains each verb.")
    parser.add_argument("--version", action="version", version=f"rayrag {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, module in VERBS.items():
        mod = import_module(module)
        p = sub.add_parser(verb, help=mod.HELP, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
        p.add_argument("--quiet", action="store_true", help="log warnings and errors only")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("urllib3", "filelock", "fsspec", "datasets", "httpx", "torch.distributed"):
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.debug, args.quiet)
    try:
        code = args._run(args)
        return int(code or 0)
    except RayragError as e:
        if args.debug:
            raise
        print(f"rayrag {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rayrag {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
