"""Imports form layers, never a loop: no two of the project's own modules (app.py, pages/,
dermcore/, training/, benchmarks/ and any package beside them) import each other, directly or
through others. Read from the source with `ast`, nothing is imported.

Every import statement counts, including those inside functions and under `TYPE_CHECKING`: an
import deferred to call time still ties the two modules together, and the loop is still there
for a reader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Not project code: tests import everything by design; the rest holds data or build output.
SKIP_DIRS = {"tests", "runs", "weights", "node_modules", "build", "dist"}


def project_modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under `root` outside SKIP_DIRS and
    hidden folders (a package's __init__.py is the package's name)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p in SKIP_DIRS or p.startswith(".") for p in parts[:-1]):
            continue
        names = list(parts[:-1]) + ([] if path.name == "__init__.py" else [path.stem])
        if names:
            modules[".".join(names)] = path
    return modules


def imported_names(path: Path, module: str) -> list[tuple[str, int]]:
    """(dotted name, line) of every import in the file: `import a.b` gives a.b, `from a import b`
    gives a.b (import_graph falls back to a when a.b is not a module); relative imports are
    resolved against `module`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join([*base, *([node.module] if node.module else [])])
            found.extend((f"{stem}.{alias.name}", node.lineno) for alias in node.names)
    return found


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """module -> {project module it imports: line of the first such import}."""
    modules = project_modules(root)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        for name, line in imported_names(path, module):
            parts = name.split(".")
            # the longest prefix that is a project module: `import a.b.c` names a.b.c
            target = next(
                (
                    ".".join(parts[:n])
                    for n in range(len(parts), 0, -1)
                    if ".".join(parts[:n]) in modules
                ),
                None,
            )
            if target is not None and target != module:
                graph[module].setdefault(target, line)
    return graph


def import_cycles(root: Path) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def describe(root: Path, component: list[str]) -> str:
    graph = import_graph(root)
    edges = [
        f"  {a} -> {b} ({project_modules(root)[a].relative_to(root)}:{graph[a][b]})"
        for a in component
        for b in sorted(graph[a])
        if b in component
    ]
    return "\n".join([" <-> ".join(component), *edges])


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    "files, expected",
    [
        # one way: no loop
        ({"pkg/a.py": "from pkg import b\n", "pkg/b.py": "import pkg.c\n", "pkg/c.py": ""}, []),
        # a loop through a function-local import
        (
            {"pkg/a.py": "from pkg.b import f\n", "pkg/b.py": "def f():\n    from pkg import a\n"},
            [["pkg.a", "pkg.b"]],
        ),
        # a loop under TYPE_CHECKING, through a relative import, over three modules
        (
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "from . import b\n",
                "pkg/b.py": "import pkg.c\n",
                "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import X\n",
            },
            [["pkg.a", "pkg.b", "pkg.c"]],
        ),
        # tests may import anything; a third-party name that shadows nothing is ignored
        ({"pkg/a.py": "import numpy\n", "tests/test_a.py": "from pkg import a\n"}, []),
    ],
)
def test_cycle_finder_on_small_packages(tmp_path, files, expected):
    assert import_cycles(write(tmp_path, files)) == expected


def test_project_modules_cover_every_layer():
    modules = project_modules(REPO)
    assert {"app", "training.train", "dermcore.models", "benchmarks.bench_report"} <= set(modules)
    assert not any(m.startswith("tests") for m in modules)


def test_no_two_project_modules_import_each_other():
    cycles = import_cycles(REPO)
    assert not cycles, "import loops:\n" + "\n\n".join(describe(REPO, c) for c in cycles)
