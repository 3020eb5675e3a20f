"""Turn an options dataclass into argparse flags: one flag per field, its docstring as the help."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path


def field_docs(cls) -> dict[str, str]:
    """The docstring written under each field of a dataclass (litgpt style)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split()).replace("%", "%%")
    return docs


def _base_type(tp):
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def add_dataclass_args(parser: argparse.ArgumentParser, cls, *, dash: str = "_",
                       skip: tuple[str, ...] = ()) -> None:
    """Add `--field` for every field of `cls` (`dash` replaces underscores in flag names)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", dash)
        tp = _base_type(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        help_text = docs.get(f.name, "")
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=f.default, help=help_text)
            continue
        kwargs = {"dest": f.name, "help": help_text, "type": Path if tp is Path else tp}
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
            if f.default is not None:
                kwargs["help"] = f"{help_text} (default: {f.default})"
        parser.add_argument(flag, **kwargs)


def to_dataclass(cls, ns: argparse.Namespace):
    """Build `cls` from the parsed flags that match its fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(ns).items() if k in names})
