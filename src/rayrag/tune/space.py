"""The search space: train options and their distributions, from a YAML/JSON file and inline flags, checked once.

A space file maps a `rayrag train` option to one distribution, written as a one-key mapping:

    learning_rate: {loguniform: [1.0e-5, 3.0e-4]}   # a < b, both > 0
    dropout: {uniform: [0.0, 0.2]}                   # a < b
    warmup_steps: {randint: [0, 50]}                 # whole numbers a <= x < b (b excluded, as in Ray Tune)
    n_docs: {choice: [2, 3]}                         # one of the values, at random
    lr_scheduler: {grid: [linear, constant]}         # every value, each with --num_samples samples

An inline flag takes the same mapping (`--search.n_docs '{choice: [2, 3]}'`) or the short form
`KIND:V1,V2` (`--search.learning_rate loguniform:1e-5,3e-4`); it replaces the file's entry for its key.
Every value a distribution can produce is checked as `rayrag train` checks its flags before anything
starts; an error is one line naming the file (or flag), the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayrag.errors import RayragError
from rayrag.train.options import TrainOptions

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")
RANGES = ("loguniform", "uniform", "randint")

FIXED = frozenset({
    "data_dir", "output_dir", "model_name_or_path", "kb", "index_name", "do_train", "do_predict", "n_val", "n_test",
    "resume", "retrieval", "cluster", "launcher", "max_failures", "profile", "progress", "gpus", "accelerator",
    "devices", "num_nodes", "num_workers", "val_check_interval", "log_every_n_steps", "save_every_n_steps",
    "context_encoder_name", "reindex_workers", "reindex_threads", "index_gpus", "gpu_order", "shard_dir"})
"""Train options a search keeps fixed: where things are (the knowledge base among them), how the job runs (the
retrieval service and the Ray cluster among them), and what makes trials comparable (the validation set and when
it is scored)."""

SEARCHABLE = tuple(f.name for f in dataclasses.fields(TrainOptions) if f.name not in FIXED)
_HINTS = typing.get_type_hints(TrainOptions)
SHAPE = "one distribution per option, e.g. `learning_rate: {loguniform: [1.0e-5, 3.0e-4]}`"


@dataclass(frozen=True)
class Dimension:
    """One searched option: `key` (a TrainOptions field), its distribution `kind` and `values` (bounds or
    choices), and `where` it was given (a file or a flag), for error messages."""

    key: str
    kind: str
    values: tuple
    where: str

    def to_tune(self):
        """Ray Tune's search-space object for this dimension."""
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "choice":
            return tune.choice(list(self.values))
        return getattr(tune, self.kind)(*self.values)

    def describe(self) -> str:
        return f"{self.kind}{list(self.values)}"


def _base_type(key: str) -> type:
    """The field's type without `| None`."""
    hint = _HINTS[key]
    if typing.get_origin(hint) is typing.Literal:
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _name(field_type: Any) -> str:
    """A field type as the errors name it: `a int`, or the choices of a Literal (`one of linear, cosine`)."""
    if typing.get_origin(field_type) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(field_type)))
    return "a " + field_type.__name__


def _coerce(value: Any, kind: type) -> Any:
    """A numeric field's value written as text (YAML 1.1 reads `1e-5` as a string) as a number; others as given."""
    if kind in (int, float) and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if kind is int and number.is_integer() else number
    return value


def _fits(value: Any, kind: Any, optional: bool) -> bool:
    if value is None:
        return optional
    if typing.get_origin(kind) is typing.Literal:
        return value in typing.get_args(kind)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


def parse_dimension(key: str, spec: Any, where: str) -> Dimension:
    """A checked `Dimension` from the one-key mapping `spec`; `RayragError` naming `where` and `key` otherwise."""
    at = f"{where}: {key}"
    if key not in _HINTS:
        close = difflib.get_close_matches(key, SEARCHABLE, n=1)
        hint = f"did you mean {close[0]}?" if close else f"searchable options: {', '.join(SEARCHABLE)}"
        raise RayragError(f"{at}: not an option of `rayrag train`; {hint}")
    if key in FIXED:
        raise RayragError(f"{at}: fixed for the whole search, not searchable; give it as --{key} instead")
    if not (isinstance(spec, dict) and len(spec) == 1):
        raise RayragError(f"{at}: {spec!r} is not a distribution; write {SHAPE} "
                          f"(distributions: {', '.join(DISTRIBUTIONS)})")
    kind, raw = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1)
        hint = f"did you mean {close[0]}?" if close else f"choose one of {', '.join(DISTRIBUTIONS)}"
        raise RayragError(f"{at}: unknown distribution {kind!r}; {hint}")
    field_type, optional = _base_type(key), type(None) in typing.get_args(_HINTS[key])
    values = tuple(_coerce(v, field_type) for v in (raw if isinstance(raw, list) else [raw]))
    if kind in RANGES:
        _check_range(at, key, kind, values, field_type)
    elif not values or not isinstance(raw, list):
        raise RayragError(f"{at}: {kind} takes a non-empty list of values, e.g. {{{kind}: [2, 3]}}")
    else:
        for v in values:
            if not _fits(v, field_type, optional):
                raise RayragError(f"{at}: {kind} value {v!r} is not {_name(field_type)}; give such values")
    return Dimension(key, kind, values, where)


def _check_range(at: str, key: str, kind: str, values: tuple, field_type: type) -> None:
    example = "[0, 50]" if kind == "randint" else "[1.0e-5, 3.0e-4]"
    if field_type not in (int, float):
        raise RayragError(f"{at}: {kind} needs a numeric option, and {key} takes {_name(field_type)}; "
                          "use choice or grid")
    if field_type is int and kind != "randint":
        raise RayragError(f"{at}: {key} takes whole numbers; use randint, choice or grid, not {kind}")
    if len(values) != 2 or not all(_fits(v, int if kind == "randint" else float, False) for v in values):
        number = "whole numbers" if kind == "randint" else "numbers"
        raise RayragError(f"{at}: {kind} takes two {number} [low, high], e.g. {{{kind}: {example}}}")
    low, high = values
    if not low < high:
        raise RayragError(f"{at}: {kind} bounds [{low}, {high}]: the low bound must be below the high one")
    if kind == "loguniform" and low <= 0:
        raise RayragError(f"{at}: loguniform bounds [{low}, {high}]: both must be above 0; use uniform to include 0")


def _inline(text: str) -> Any:
    """An inline flag's value: a YAML/JSON mapping, or the short form KIND:V1,V2."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if isinstance(value, dict):
        return value
    kind, sep, rest = text.partition(":")
    if not sep:
        return text
    return {kind.strip(): [yaml.safe_load(v.strip()) for v in rest.split(",")] if rest.strip() else []}


def read_space_file(path: Path) -> dict:
    """The file's mapping of option -> distribution; `RayragError` naming the file (and line) otherwise."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RayragError(f"--space {path}: cannot read it ({e.strerror or e}); give a YAML or JSON file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RayragError(f"{path}{line}: not valid YAML or JSON ({problem}); write {SHAPE}") from None
    if data is None:
        raise RayragError(f"{path}: empty; write {SHAPE}")
    if not isinstance(data, dict):
        raise RayragError(f"{path}: holds a {type(data).__name__}, not a mapping; write {SHAPE}")
    return data


def build_space(space_file: Path | None, inline: dict[str, str | None]) -> dict[str, Dimension]:
    """Every searched option's `Dimension`: the file's, then the inline flags' (which replace the file's)."""
    dims: dict[str, Dimension] = {}
    if space_file is not None:
        for key, spec in read_space_file(space_file).items():
            dims[str(key)] = parse_dimension(str(key), spec, str(space_file))
    for key, text in inline.items():
        if text is not None:
            dims[key] = parse_dimension(key, _inline(text), f"--search.{key}")
    return dims


def check_values(dims: dict[str, Dimension], base: TrainOptions) -> None:
    """Check every value each dimension can produce (a range's bounds, every choice) as `rayrag train` checks
    its flags, each over `base` (the fixed options); `RayragError` naming where, the key and the fix."""
    for dim in dims.values():
        values = dim.values if dim.kind not in ("randint",) else (dim.values[0], dim.values[1] - 1)
        for v in values:
            try:
                dataclasses.replace(base, **{dim.key: v}).validate()
            except RayragError as e:
                raise RayragError(f"{dim.where}: {dim.key}: {dim.describe()} can give {v!r}, which `rayrag train` "
                                  f"refuses ({e}); narrow the distribution") from None


def param_space(dims: dict[str, Dimension]) -> dict:
    """Ray Tune's `param_space`: option -> Tune distribution."""
    return {key: dim.to_tune() for key, dim in dims.items()}
