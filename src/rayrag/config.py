"""Options dataclasses as jsonargparse parsers, and a run's resolved options as YAML (`config.yaml`).

Every verb's options are one dataclass whose field docstrings are its `--help`. `options_parser`
turns the dataclass into a jsonargparse parser (nested dataclasses become `--group.field` flags,
`--config FILE` reads YAML, `--print_config` prints it); `write_config` writes the options a run
used into its output directory, in the form `rayrag VERB --config FILE` reads back.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, Namespace, set_parsing_settings

CONFIG_FILE = "config.yaml"
"""Name of the resolved config a run writes into its output directory."""

T = TypeVar("T")


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help (types and defaults) with the description's line breaks kept (examples)."""

    def format_help(self) -> str:
        """The help, with types written as their names (`Path`, not `<class 'pathlib.Path'>`)."""
        return re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", super().format_help())


def options_parser(cls: type, prog: str | None = None, description: str | None = None) -> ArgumentParser:
    """A parser with one flag per field of the dataclass `cls` (`--group.field` for nested dataclasses),
    `--config FILE` and `--print_config`. It raises `argparse.ArgumentError` instead of exiting."""
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False, allow_abbrev=False,
                            formatter_class=HelpFormatter)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="YAML file of options (as --print_config writes them); later flags override it")
    parser.add_class_arguments(cls, fail_untyped=True, sub_configs=True)
    return parser


def _build(cls: type[T], values: dict) -> T:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = values[f.name]
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, dict):
            value = _build(hints[f.name], value)
        kwargs[f.name] = value
    return cls(**kwargs)


def to_options(cls: type[T], namespace: Namespace) -> T:
    """The dataclass `cls` (nested dataclasses built too) from a parsed namespace; other keys (--debug) are left out."""
    return _build(cls, namespace.as_dict())


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dump_options(opts: Any) -> str:
    """`opts` (an options dataclass) as YAML, every field present (None as null), paths as strings."""
    parser = options_parser(type(opts))
    keep_nulls = "skip_unset" if "skip_unset" in inspect.signature(parser.dump).parameters else "skip_none"  # 4.49
    return parser.dump(parser.parse_object(_plain(opts)), **{keep_nulls: False})


def write_config(opts: Any, directory: Path, name: str = CONFIG_FILE) -> Path:
    """Write `opts` as `directory/name` (default config.yaml), which `rayrag VERB --config FILE` reads back;
    returns its path."""
    from rayrag.atomic import atomic_write_text

    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dump_options(opts))
    return path
