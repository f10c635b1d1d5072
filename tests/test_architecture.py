"""The shape of the package (``docs/design.md``): one-way imports, no cycles, small files and functions.

Read from the source with ``ast`` (lazy imports inside functions count, ``TYPE_CHECKING`` imports too), so a
change that breaks the layering fails here rather than in a reviewer's head.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "vqkit"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
DECLARATIVE = {("vqkit.cli", "_parser")}
"""Functions allowed over the limit: declarative argument parsers (one ``add_argument`` per line)."""

# Each layer may import only from the layers listed (and itself). ``vqkit`` (the package root) re-exports and
# is imported by nobody inside the package.
_LIBRARY = {"core", "functional", "quantizers", "metrics.codes", "io", "models", "metrics.eval", "data"}
LAYERS: dict[str, set[str]] = {
    "core": {"core"},  # types, _validate, _version, distributed, utils
    "functional": {"core", "functional"},
    "quantizers": {"core", "functional", "quantizers"},  # with registry.py, the factory they register with
    "metrics.codes": {"core", "functional", "quantizers", "metrics.codes"},
    "io": {"core", "functional", "quantizers", "io"},
    "models": {"core", "functional", "quantizers", "metrics.codes", "models", "io"},
    "metrics.eval": {"core", "functional", "metrics.codes", "metrics.eval"},
    "data": {"core", "functional", "data"},
    "library": _LIBRARY | {"library"},  # rates, recipes, export, pretrained
    "train": _LIBRARY | {"library", "train"},
    "cli": _LIBRARY | {"library", "train", "cli"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str:
    rest = module.removeprefix("vqkit.")
    if module == "vqkit":
        return "root"
    top = rest.split(".")[0]
    if top == "metrics":
        sub = rest.split(".")[1] if "." in rest else ""
        return "metrics.eval" if sub == "eval" else "metrics.codes"
    if top in ("functional", "quantizers", "models", "data", "train"):
        return top
    if top in ("io",):
        return "io"
    if top in ("cli",):
        return "cli"
    if top == "registry":
        return "quantizers"  # the factory: quantizer modules register themselves with it
    if top == "export":
        return "library"
    if top == "pretrained":
        return "library"  # shipped tokenizers: models, loaded by name
    if top in ("rates", "recipes", "demo"):
        return "library" if top != "demo" else "train"
    return "core"


def imports(module: str) -> Iterator[str]:
    """Every ``vqkit`` module ``module`` imports (a ``from pkg import name`` of a submodule counts as it)."""
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "vqkit")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "vqkit":
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield full if full in MODULES else node.module


def test_no_import_cycles() -> None:
    graph = {m: {t for t in imports(m) if t in MODULES and t != m} for m in MODULES}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycle = [*visiting[visiting.index(node) :], node]
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
        visiting.append(node)
        for target in sorted(graph[node]):
            visit(target)
        visiting.pop()
        done.add(node)

    for module in sorted(graph):
        visit(module)


def test_imports_flow_one_way() -> None:
    wrong = []
    for module in MODULES:
        source = layer(module)
        if source == "root":
            continue
        for target in imports(module):
            if target == "vqkit":
                wrong.append(f"{module} imports the package root (import the defining module instead)")
            elif target in MODULES and layer(target) not in LAYERS[source]:
                wrong.append(f"{module} ({source}) imports {target} ({layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_files_and_functions_stay_small() -> None:
    long = []
    for module, path in MODULES.items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            long.append(f"{path.relative_to(SRC)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES and (module, node.name) not in DECLARATIVE:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {size} lines")
    assert not long, "\n".join(long)
