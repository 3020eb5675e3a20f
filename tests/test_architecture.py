"""The shape of the source tree: no import cycle, no two packages importing each other, test-only modules kept
out of the import path."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rayrag"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    return [(n.module or "", id(n) in top) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + \
        [(a.name, id(n) in top) for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]


def _module_graph() -> dict[str, set[str]]:
    """rayrag module -> the rayrag modules it imports (lazy imports inside functions included)."""
    names = {}
    for path in SRC.rglob("*.py"):
        parts = ["rayrag", *path.relative_to(SRC).with_suffix("").parts]
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                found |= {m for m in (n.module, *(f"{n.module}.{a.name}" for a in n.names)) if m in names}
            elif isinstance(n, ast.Import):
                found |= {a.name for a in n.names if a.name in names}
        graph[name] = {m for m in found if m != name and not name.startswith(m + ".")}
    return graph


def test_no_import_cycle_and_tiny_models_out_of_the_import_path():
    """No module imports a module that imports it back, directly or through others (DFS over the import
    graph), and no two packages import each other; tiny test models are only imported lazily."""
    graph = _module_graph()
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join(stack[stack.index(n):] + [n])
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    package = {m: ".".join(m.split(".")[:2]) for m in graph}
    edges = {(package[a], package[b]) for a in graph for b in graph[a] if package[a] != package[b]}
    assert not [(a, b) for a, b in edges if (b, a) in edges], "packages that import each other"
    for path in SRC.rglob("*.py"):
        assert ("rayrag.tiny", True) not in _imports(path), f"{path} imports rayrag.tiny at module level"


LIBRARIES = ("lightning", "ray", "jsonargparse", "transformers", "torch", "faiss", "datasets", "argparse")


def test_src_uses_the_libraries_public_api_only():
    """No `obj._private` attribute of another object (super()._x included: overriding a library's private method
    counts too), and nothing imported from a private module or name of the libraries rayrag builds on. An object's
    own attributes (self._x) and rayrag's own `_rayrag_*` marks on library objects are its business."""
    found = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for n in ast.walk(tree):
            where = f"{path.relative_to(SRC)}:{getattr(n, 'lineno', '?')}"
            if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__") \
                    and not n.attr.startswith("_rayrag") \
                    and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")):
                found.append(f"{where} {ast.unparse(n)}")
            if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] in LIBRARIES and (
                    any(p.startswith("_") for p in n.module.split(".")) or any(a.name.startswith("_") for a in n.names)):
                found.append(f"{where} from {n.module} import {', '.join(a.name for a in n.names)}")
    assert not found, "private API used: " + "; ".join(found)


def test_no_test_switch_is_read_from_the_environment_by_src():
    """Faults are injected by the tests (a callback, an actor subclass), never by production code reading a
    RAYRAG_* variable."""
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "RAYRAG_" not in text, f"{path} reads a RAYRAG_* environment variable"
