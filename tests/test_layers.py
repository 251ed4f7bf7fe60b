"""The package's layering, read from the source with ``ast`` (nothing of zephyr_arrow is imported).

Every ``import`` and ``from ... import`` of every module counts, wherever it is: at the top,
inside a function, under ``if TYPE_CHECKING:``. Relative imports are resolved, and
``from zephyr_arrow import name`` counts as importing ``zephyr_arrow.name`` when that is a
module, else the package root (whose lazy names reach every layer). The layers, bottom up:

    arrow/ (may import errors)  ->  fs.py  ->  store/  ->  io/  ->  ops/, planner/  ->  execution/  ->  cli/

A part of the package is a top-level module (dataset, records, counters, errors, arguments,
fs, ...) or package (arrow, store, io, ops, planner, execution, cli).
"""

from __future__ import annotations

import ast
import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "zephyr_arrow"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE
ROOT_INIT = PACKAGE_DIR / "__init__.py"


@dataclass(frozen=True)
class Import:
    source: Path  # the importing file
    line: int
    target: str  # the imported module, absolute: "zephyr_arrow.execution.tasks"

    def __str__(self) -> str:
        return f"{self.source.relative_to(PACKAGE_DIR.parent)}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(name: str) -> str | None:
    """The top-level part a zephyr_arrow module belongs to (None for the package root)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def is_module(name: str) -> bool:
    path = PACKAGE_DIR.parent.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def imports_of(path: Path) -> Iterator[Import]:
    """The zephyr_arrow modules ``path`` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            targets = [f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base for alias in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                yield Import(path, node.lineno, target)


def all_modules() -> list[Path]:
    return sorted(p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def in_parts(*parts: str) -> Callable[[str], bool]:
    return lambda name: part_of(name) in parts


@dataclass(frozen=True)
class Rule:
    sources: Callable[[str], bool]  # which modules (by name) the rule applies to
    forbidden: Callable[[str], bool]  # which imported modules they may not import


def only(*parts: str) -> Callable[[str], bool]:
    """Forbids every zephyr_arrow module outside ``parts`` (the package root too)."""
    return lambda target: part_of(target) not in parts


def _is_root(target: str) -> bool:
    return target == PACKAGE


# The first three follow the layout's "may import" notes; the others are the layering rules.
RULES = {
    "fs.py imports only errors and arrow/": Rule(in_parts("fs"), only("fs", "errors", "arrow")),
    "store/ imports only arrow/, fs and errors": Rule(in_parts("store"), only("store", "arrow", "fs", "errors")),
    "io/ imports only arrow/, fs, store/ and errors": Rule(in_parts("io"), only("io", "arrow", "fs", "store", "errors")),
    "arrow/ imports only zephyr_arrow.errors and arrow/": Rule(
        in_parts("arrow"), lambda target: target != f"{PACKAGE}.errors" and part_of(target) != "arrow"
    ),
    "store/, arrow/, io/ and fs.py import no execution, planner, ops, dataset or cli (nor the package root)": Rule(
        in_parts("store", "arrow", "io", "fs"),
        lambda target: _is_root(target) or part_of(target) in ("execution", "planner", "ops", "dataset", "cli"),
    ),
    "ops/ and planner/ import no execution or cli (nor the package root)": Rule(
        in_parts("ops", "planner"), lambda target: _is_root(target) or part_of(target) in ("execution", "cli")
    ),
    "only cli/ imports cli": Rule(lambda name: part_of(name) != "cli", in_parts("cli")),
}


@pytest.mark.parametrize("rule_name", list(RULES))
def test_layer_rule(rule_name):
    rule = RULES[rule_name]
    sources = [path for path in all_modules() if rule.sources(module_name(path))]
    assert sources, f"no module of {PACKAGE_DIR} falls under the rule {rule_name!r}: has the layout changed?"
    violations = [str(imp) for path in sources for imp in imports_of(path) if rule.forbidden(imp.target)]
    assert not violations, f"{rule_name}, but:\n  " + "\n  ".join(violations)


def find_cycles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one part (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, {})):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_shortest_cycle(edges, component) for component in sorted(components)]


def _shortest_cycle(edges: dict[str, dict[str, Import]], component: list[str]) -> list[str]:
    """The shortest path from the component's first part back to itself, inside the component."""
    start = component[0]
    previous: dict[str, str] = {}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(edges.get(node, {})):
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if successor in component and successor not in previous:
                previous[successor] = node
                queue.append(successor)
    raise AssertionError(f"no cycle through {start} in {component}")


def test_no_import_cycles_between_parts():
    # One witness import per edge between two parts; the root __init__'s lazy loader may point anywhere.
    edges: dict[str, dict[str, Import]] = collections.defaultdict(dict)
    for path in all_modules():
        if path == ROOT_INIT:
            continue
        source = part_of(module_name(path))
        for imp in imports_of(path):
            target = part_of(imp.target)
            if target is not None and target != source:
                edges[source].setdefault(target, imp)
    assert edges, f"no imports between parts of {PACKAGE_DIR}: has the layout changed?"
    cycles = find_cycles(edges)
    assert not cycles, "import cycles between parts of the package:\n" + "\n".join(
        " -> ".join(cycle) + "".join(f"\n    {a} -> {b}: {edges[a][b]}" for a, b in zip(cycle, cycle[1:]))
        for cycle in cycles
    )
