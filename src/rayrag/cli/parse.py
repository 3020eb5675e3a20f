"""One verb's command line: its options dataclass as a jsonargparse parser, old spellings, short errors.

A verb module (`cli/train.py`, ...) names its options dataclass `OPTIONS`, its alias table `ALIASES`
(cli/aliases.py), optionally the field that takes bare words `POSITIONAL`, and `run(opts, quiet)`.
Its module docstring is the description in `--help`.
"""

from __future__ import annotations

import argparse
import difflib
import re
import textwrap
import typing
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from jsonargparse import ArgumentParser

from rayrag.cli.aliases import COMMON, leaves, rewrite
from rayrag.config import options_parser, to_options


@dataclass(frozen=True)
class Common:
    """The flags every verb has besides its options: --debug and --quiet."""

    debug: bool = False
    quiet: bool = False


def verb_parser(module: ModuleType, prog: str) -> ArgumentParser:
    """The verb's parser: its options, --config, --print_config, --debug and --quiet."""
    parser = options_parser(module.OPTIONS, prog=prog, description=module.__doc__)
    parser.epilog = "A boolean flag alone means true (--debug); --debug false turns it off."
    aliases = getattr(module, "ALIASES", {})
    if aliases:
        parser.epilog += "\n\n" + textwrap.fill("Older spellings, still accepted: " + ", ".join(
            f"{old} ({new})" for old, new in _grouped(aliases).items()), 100, break_on_hyphens=False)
    parser.add_argument("--debug", type=bool, default=False, help="show tracebacks and debug logs")
    parser.add_argument("--quiet", type=bool, default=False, help="log warnings and errors only")
    return parser


def _grouped(aliases: dict[str, str]) -> dict[str, str]:
    """The alias table for --help, each whole group moved as one (`--pool.*` for `--retrieval.pool.*`)."""
    shown: dict[str, str] = {}
    for old, new in aliases.items():
        head, dot, _ = old.partition(".")
        if dot and new.endswith(old[len(head):]):
            shown[f"{head}.*"] = new[:len(new) - len(old) + len(head)] + ".*"
        elif new.endswith("." + old[2:]) and new[2:len(new) - len(old) + 2].count(".") == 1:
            shown["--*"] = new[:len(new) - len(old) + 2] + "*"  # every flag of a group under its own name
        else:
            shown[old] = new
    return shown


def parse(module: ModuleType, prog: str, argv: list[str]) -> tuple[Any, Common]:
    """The verb's options and common flags from `argv`. Raises `argparse.ArgumentError` with a one-line
    message naming the flag; `--help` and `--print_config` print and raise `SystemExit(0)`."""
    parser = verb_parser(module, prog)
    args = rewrite(argv, module.OPTIONS, getattr(module, "ALIASES", {}), getattr(module, "POSITIONAL", None))
    try:
        namespace = parser.parse_args(args)
    except argparse.ArgumentError as e:
        raise argparse.ArgumentError(None, short_message(module.OPTIONS, str(e))) from None
    return to_options(module.OPTIONS, namespace), Common(namespace.debug, namespace.quiet)


def _type_name(hint: Any) -> str:
    choices = [a for a in typing.get_args(hint) if typing.get_origin(hint) is typing.Literal]
    if choices or any(typing.get_origin(a) is typing.Literal for a in typing.get_args(hint)):
        choices = choices or [c for a in typing.get_args(hint) for c in typing.get_args(a)]
        return "one of " + ", ".join(map(str, choices))
    text = getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint)
    text = re.sub(r"\bNone(Type)?\b", "null", str(text).replace("pathlib.", ""))
    return text.replace(" | ", " or ")


def short_message(cls: type, message: str) -> str:
    """jsonargparse's error (often many lines) for the options dataclass `cls` as one line that names the flag."""
    fields = leaves(cls)
    key = re.match(r'Parser key "([^"]+)":', message)
    if key:
        flag = "--" + key.group(1)
        given = re.findall(r"(?:Got|Given) value: (.*)", message)
        hint = fields.get(key.group(1))
        if given and hint is not None:
            return f"{flag} {given[-1].strip()}: expected {_type_name(hint)}"
        return f"{flag}: " + " ".join(message[key.end():].split())
    required = (re.match(r"(?i)the following arguments are required: (.*)", message)
                or re.search(r'Key "([^"]+)" is required', message))  # jsonargparse < 4.49
    if required:
        names = ", ".join("--" + n.strip() for n in required.group(1).split(","))
        return f"missing {names}: give them as flags or in --config FILE"
    unknown = re.match(r"(?i)unrecognized arguments: ((\S+).*)", message)
    if unknown:
        known = sorted(f"--{name}" for name in fields) + sorted(COMMON)
        close = difflib.get_close_matches(unknown.group(2).split("=")[0], known, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see --help"
        return f"unrecognized arguments: {unknown.group(1)}{hint}"
    return " ".join(message.split())
