"""The import graph keeps its shape: no cycle between packages, the trigger language a leaf.

A unit is a package directly under `processor/` (`processor.matching`) or a top-level
module (`processor.messages`). Imports inside functions count as much as those at the
top: a deferred import hides a cycle, it does not remove it."""

from __future__ import annotations

import ast
from collections import defaultdict
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "processor"
LEAF = "processor.language"


def unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports() -> dict[str, set[str]]:
    """Each unit and the units of ours it imports (itself left out)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = module_of(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: write imports from `processor.`"
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("processor.") and unit(name) != unit(module):
                    graph[unit(module)].add(unit(name))
        graph.setdefault(unit(module), set())
    return graph


def test_the_graph_has_what_it_should() -> None:
    graph = imports()
    assert {"processor.matching", "processor.definitions", LEAF} <= set(graph)
    assert LEAF in graph["processor.definitions"]  # the reader sees real edges


def test_no_package_imports_one_that_imports_it_back() -> None:
    try:
        TopologicalSorter(imports()).prepare()
    except CycleError as exc:
        raise AssertionError(f"an import cycle between packages: {exc.args[1]}") from None


def test_the_trigger_language_imports_nothing_else_of_ours() -> None:
    assert imports()[LEAF] == set()
