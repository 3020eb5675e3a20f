"""Old spellings of flags, rewritten in argv to the one spelling (underscores) before jsonargparse parses it.

Every command line that argparse accepted before rayrag used jsonargparse still works. Each verb's
module has one alias table, `ALIASES` (old flag -> its flag now, optionally with `=VALUE`), built
from the helpers below; `rewrite` applies it and keeps argparse's habits that jsonargparse lacks:

- a boolean flag alone means true (`--do_train`); `--do_train false` and `--do_train=false` work too;
- `--no-FLAG` is `--FLAG=false` (argparse's BooleanOptionalAction), through the table (`negations`);
- a list flag takes the words after it (`--docs a.jsonl b.tsv`, argparse's nargs="+");
- words that are no flag's value go to the verb's positional field (`ask`'s questions); `--` ends the flags;
- a unique prefix of a flag stands for the flag (argparse's abbreviations).
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Mapping, Sequence

from jsonargparse import ArgumentParser

_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+(e-?\d+)?$|^-\d+e-?\d+$")
_BOOL_WORDS = ("true", "false")


def dashed(cls: type, group: str = "") -> dict[str, str]:
    """`--index-size` -> `--index_size` for each field of the dataclass `cls` with an underscore (index, bench
    and demo spelled their flags with dashes); `group` puts the fields under a nested one (`index.`)."""
    return {"--" + f.name.replace("_", "-"): f"--{group}{f.name}" for f in dataclasses.fields(cls)
            if "_" in f.name or group}


def flat(cls: type, group: str) -> dict[str, str]:
    """`--hnsw_m` -> `--index.hnsw_m`: the fields of a nested dataclass under their names alone."""
    return {f"--{f.name}": f"--{group}{f.name}" for f in dataclasses.fields(cls)}


def negations(cls: type, dash: bool = False) -> dict[str, str]:
    """`--no-progress` -> `--progress=false` for each boolean field (`dash`: `--no-freeze-embeddings`)."""
    hints = typing.get_type_hints(cls)
    return {"--no-" + (f.name.replace("_", "-") if dash else f.name): f"--{f.name}=false"
            for f in dataclasses.fields(cls) if hints[f.name] in (bool, bool | None)}


def _kinds(parser: ArgumentParser) -> tuple[set[str], set[str], set[str], set[str]]:
    """The parser's option strings: all, booleans, lists, and those that take no value (--help, --print_config)."""
    every, bools, lists, bare = set(), set(), set(), set()
    for action in parser._actions:
        names = set(action.option_strings)
        every |= names
        hint = getattr(action, "_typehint", None)
        if action.nargs == 0 or action.nargs == "?":
            bare |= names
        elif hint in (bool, bool | None):
            bools |= names
        elif typing.get_origin(hint) is list:
            lists |= {n for n in names if not n.endswith("+")}
    return every, bools, lists, bare


def _canonical(name: str, every: set[str], aliases: Mapping[str, str]) -> str:
    """The flag `name` stands for: itself, its alias, or the one flag or alias it is a prefix of."""
    if name in every:
        return name
    if name in aliases:
        return aliases[name]
    matches = {_canonical(n, every, aliases) for n in every | set(aliases) if n.startswith(name)}
    return matches.pop() if len(matches) == 1 else name


def _takes(token: str) -> bool:
    """Whether `token` can be a flag's value (argparse: anything but an option; negative numbers are values)."""
    return not token.startswith("-") or token == "-" or bool(_NUMBER.match(token))


def rewrite(argv: Sequence[str], parser: ArgumentParser, aliases: Mapping[str, str],
            positional: str | None = None) -> list[str]:
    """`argv` with every old spelling replaced by the one `parser` knows (see the module docstring)."""
    every, bools, lists, bare = _kinds(parser)
    out: list[str] = []
    loose: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--" and positional:
            loose += argv[i:]
            break
        if _takes(token):
            (loose if positional else out).append(token)
            continue
        if not token.startswith("--") or token == "--":
            out.append(token)
            continue
        name, eq, value = token.partition("=")
        name = _canonical(name, every, aliases)
        if "=" in name:  # an alias with its value (`--no-progress` -> `--progress=false`)
            out.append(name)
            continue
        if eq and name in lists and not value.lstrip().startswith("["):
            out.append(f"{name}={json.dumps([value])}")  # argparse: --docs=a.jsonl is one file
        elif eq or name in bare or name not in every:
            out.append(f"{name}={value}" if eq else name)
        elif name in bools:
            if i < len(argv) and argv[i].lower() in _BOOL_WORDS:
                value, i = argv[i], i + 1
            out.append(f"{name}={value or 'true'}")
        elif name in lists:
            words = []
            while i < len(argv) and _takes(argv[i]):
                words.append(argv[i])
                i += 1
            single_list = len(words) == 1 and words[0].lstrip().startswith("[")
            out.append(f"{name}={words[0] if single_list else json.dumps(words)}" if words else name)
        else:
            out.append(name)
            if i < len(argv) and _takes(argv[i]):
                out.append(argv[i])
                i += 1
    if loose:
        out.append(f"--{positional}={json.dumps(loose)}")
    return out
