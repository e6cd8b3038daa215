"""The project's layers, read from the source with `ast` (nothing is imported): no top-level package imports
one that imports it back, and the HTTP front (front/) and the job API (jobs/) never import each other; what they
share lives below both (core/), and service.py composes them.

The harnesses (tests/, bench/) drive the project from outside and share helpers with each other; the project
never imports them, so no cycle can run through them and the project.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SKIPPED = {"build", "__pycache__"}
HARNESSES = {"tests", "bench"}


def source_folders(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.iterdir()):
        if path.is_dir() and not path.name.startswith(".") and path.name not in SKIPPED:
            yield path


def top_levels() -> dict[str, str]:
    """Importable name -> the top-level package or module of the checkout it belongs to.

    A folder without `__init__.py` (cli/) holds packages importable by their own names (audio_studio_cli).
    """
    names = {path.stem: path.stem for path in ROOT.glob("*.py")}
    for folder in source_folders(ROOT):
        if (folder / "__init__.py").exists():
            names[folder.name] = folder.name
        for child in source_folders(folder):
            if (child / "__init__.py").exists() and not (folder / "__init__.py").exists():
                names[child.name] = folder.name
    return names


def imported(path: Path) -> Iterator[str]:
    """The absolute module names `path` imports, anywhere in it (a function's lazy import counts too)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def project_files() -> Iterator[tuple[str, Path]]:
    """Every Python file of the checkout, with the top-level package or module it belongs to."""
    for path in sorted(ROOT.glob("*.py")):
        yield path.stem, path
    for folder in source_folders(ROOT):
        for path in sorted(folder.rglob("*.py")):
            if not any(part.startswith(".") or part in SKIPPED for part in path.relative_to(folder).parts[:-1]):
                yield folder.name, path


def import_graph() -> dict[str, set[str]]:
    """Top-level package -> the other top-level packages its files import."""
    names = top_levels()
    graph: dict[str, set[str]] = {}
    for top, path in project_files():
        targets = graph.setdefault(top, set())
        for module in imported(path):
            target = names.get(module.split(".")[0])
            if target is not None and target != top:
                targets.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of two or more packages that reach each other (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_project() -> None:
    graph = import_graph()
    assert {"service", "front", "jobs", "core", "runners", "models", "compat", "cli", "schemas"} <= set(graph)
    assert {"front", "jobs", "core"} <= graph["service"]


def test_no_two_top_level_packages_import_each_other() -> None:
    graph = import_graph()
    project = {name: targets - HARNESSES for name, targets in graph.items() if name not in HARNESSES}
    assert cycles(project) == []
    assert {name: targets & HARNESSES for name, targets in project.items() if targets & HARNESSES} == {}


def test_the_front_and_the_job_api_meet_only_below_and_above_them() -> None:
    graph = import_graph()
    assert "front" not in graph["jobs"], "jobs/ imports front/: move what both need to core/"
    assert "jobs" not in graph["front"], "front/ imports jobs/: let service.py pass it in"
    assert not graph["core"] & {"front", "jobs", "service", "runners", "models"}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
