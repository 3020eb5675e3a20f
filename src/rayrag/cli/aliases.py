"""Old spellings of flags, rewritten in argv to the one spelling (underscores) before jsonargparse parses it.

Every command line that argparse accepted before rayrag used jsonargparse still works. Each verb's
module has one alias table, `ALIASES` (old flag -> its flag now, optionally with `=VALUE`), built
from the helpers below; `rewrite` applies it and keeps argparse's habits that jsonargparse lacks:

- a boolean flag alone means true (`--do_train`); `--do_train false` and `--do_train=false` work too;
- `--no-FLAG` is `--FLAG=false` (argparse's BooleanOptionalAction), through the table (`negations`);
- a list flag takes the words after it (`--docs a.jsonl b.tsv`, argparse's nargs="+");
- words that are no flag's value go to the verb's positional field (`ask`'s questions); `--` ends the flags;
- a unique prefix of a flag stands for the flag (argparse's abbreviations);
- the flat spellings of the parts a verb nests (`--kb`, `--distributed_retriever`, `--ray_address`, `--pool.*`: each
  part lists its own in `OLD_SPELLINGS`, `part_spellings`) reach the nested flags, on the command line and in a
  `--config` file written before the options were grouped (`config_with_new_spellings`).

Everything is read from the options dataclass (`leaves`, `groups`), never from the parser's internals.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def leaves(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every flag of the options dataclass `cls` that takes a value, as dotted name -> type hint: its fields, and
    the fields of nested option dataclasses under their group (`retrieval.pool.call_timeout_s`)."""
    hints = typing.get_type_hints(cls)
    found: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            found.update(leaves(hints[f.name], f"{prefix}{f.name}."))
        else:
            found[prefix + f.name] = hints[f.name]
    return found


def groups(cls: type, prefix: str = "") -> set[str]:
    """The dotted names of the nested option dataclasses of `cls` (`kb`, `retrieval`, `retrieval.pool`)."""
    hints = typing.get_type_hints(cls)
    return {name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])
            for name in (prefix + f.name, *groups(hints[f.name], f"{prefix}{f.name}."))}


def part_spellings(cls: type, prefix: str = "") -> dict[str, str]:
    """The old flat spellings of the parts `cls` nests: each part dataclass lists its own in `OLD_SPELLINGS` (old
    flag -> its field's dotted name inside the part), here placed under the part's group. A spelling that is also a
    field of `cls` itself is left to that field (train's own --num_workers)."""
    hints = typing.get_type_hints(cls)
    own = {f"--{f.name}" for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[f.name])}
    table: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        part = hints[f.name]
        if not dataclasses.is_dataclass(part):
            continue
        group = f"{prefix}{f.name}."
        table.update({old: f"--{group}{name}" for old, name in getattr(part, "OLD_SPELLINGS", {}).items()
                      if old not in own})
        table.update({old: new for old, new in part_spellings(part, group).items() if old not in own})
    return table


def negations(cls: type, dash: bool = False) -> dict[str, str]:
    """`--no-progress` -> `--progress=false` for each boolean flag, nested ones by their own name (`--no-use_gpu` ->
    `--cluster.use_gpu=false`) unless a field of `cls` has that name (`dash`: `--no-freeze-embeddings`)."""
    table: dict[str, str] = {}
    for name, hint in sorted(leaves(cls).items(), key=lambda item: item[0].count(".")):  # own fields first
        if hint in (bool, bool | None):
            short = name.rsplit(".", 1)[-1]
            table.setdefault("--no-" + (short.replace("_", "-") if dash else short), f"--{name}=false")
    return table


def under(group: str, table: Mapping[str, str]) -> dict[str, str]:
    """`table` (old flag -> flag) with every target moved under `group` (`--kb` -> `--train.kb.path`)."""
    return {old: "--" + group + new[2:] for old, new in table.items()}


COMMON = {"--config", "--print_config", "--help", "-h", "--debug", "--quiet"}
"""The flags every verb's parser has besides its options (cli/parse.py)."""


def _kinds(cls: type) -> tuple[set[str], set[str], set[str], set[str], set[str]]:
    """The flags of the options dataclass `cls`: all, booleans, lists, those that take no value (--help,
    --print_config), and the nested groups."""
    fields = leaves(cls)
    every = {f"--{name}" for name in fields} | COMMON
    bools = {f"--{name}" for name, hint in fields.items() if hint in (bool, bool | None)} | {"--debug", "--quiet"}
    lists = {f"--{name}" for name, hint in fields.items() if typing.get_origin(hint) is list}
    return every, bools, lists, {"--help", "-h", "--print_config"}, {f"--{g}" for g in groups(cls)}


def _canonical(name: str, every: set[str], aliases: Mapping[str, str]) -> str:
    """The flag `name` stands for: itself, its alias, or the one flag or alias it is a prefix of."""
    if name in every and name not in aliases:
        return name
    if name in aliases:
        return aliases[name]
    matches = {_canonical(n, every, aliases) for n in every | set(aliases) if n.startswith(name)}
    return matches.pop() if len(matches) == 1 else name


def _takes(token: str) -> bool:
    """Whether `token` can be a flag's value (argparse: anything but an option; negative numbers are values)."""
    return not token.startswith("-") or token == "-" or bool(_NUMBER.match(token))


def rewrite(argv: Sequence[str], cls: type, aliases: Mapping[str, str], positional: str | None = None) -> list[str]:
    """`argv` with every old spelling replaced by the one the parser of the options dataclass `cls` knows (see the
    module docstring); a `--config FILE` written with old spellings is read and passed on with the new ones."""
    every, bools, lists, bare, nested = _kinds(cls)
    every |= nested
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
        if name == "--config" and (eq or i < len(argv)):
            if not eq:
                value, i = argv[i], i + 1
            out += ["--config", config_with_new_spellings(value, cls, aliases)]
            continue
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


def _flatten(data: dict, known: set[str], prefix: str = "") -> dict[str, Any]:
    """`data` (a YAML mapping) as dotted key -> value, descending into mappings until a key is a flag of its own."""
    flat_: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in known:
            flat_.update(_flatten(value, known, name + "."))
        else:
            flat_[name] = value
    return flat_


def config_with_new_spellings(value: str, cls: type, aliases: Mapping[str, str]) -> str:
    """The `--config` argument `value` as the parser of `cls` reads it: a file (or YAML text) whose keys use old
    spellings (a config.yaml written before the options were grouped: `kb: DIR`, `distributed_retriever: ray`,
    `pool: {...}`) becomes YAML text with the keys of today; anything else is passed on as it is."""
    import yaml

    path = Path(value)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8") if path.is_file() else value)
    except (OSError, yaml.YAMLError):
        return value
    if not isinstance(data, dict):
        return value
    known = set(leaves(cls)) | ({k[2:] for k in aliases if "=" not in aliases[k]} - groups(cls))
    renamed = {aliases[f"--{k}"][2:] if "=" not in aliases.get(f"--{k}", "=") else k: v
               for k, v in _flatten(data, known).items()}
    if renamed == _flatten(data, known):
        return value
    nested: dict[str, Any] = {}
    for key, v in renamed.items():
        *parents, last = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return yaml.safe_dump(nested, sort_keys=False)
