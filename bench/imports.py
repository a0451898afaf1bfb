"""The shape of the house, read from its imports: circles, imports that run back up, floors,
modules directly in ``orchestrator/`` and the longest positional argument list; circles and
imports that run back up between folders too.

Reads every module of ``orchestrator/`` and ``trials/`` with ``ast`` (nothing is imported) and
draws an edge for each import of another of their modules: at module level, inside a function
(a lazy import) or under ``if TYPE_CHECKING:``. A package's ``__init__`` importing its own
submodules is the package showing its face (Optuna's does the same), so those edges are left out.

- **Circles**: the strongly connected components of the whole graph, lazy and TYPE_CHECKING
  imports included; a circle closed only by a lazy import is still a circle.
- **Floors**: a module that imports none of the others is on floor 0, any other sits one floor
  above the highest module it imports, every import counted except the lazy and TYPE_CHECKING
  ones inside a circle (the ones that close it).
- **Back-up imports**: an import of a module on the same floor or higher: an import that closes
  a circle, found whether it is written at the top of the file, in a function or for the type
  checker.
- **Folders**: the same measures with each folder as one node: each folder of ``orchestrator/``
  (``orchestrator/run/`` is ``orchestrator.run``), ``trials/``, and each module directly in
  ``orchestrator/`` on its own. An import between two modules of one folder is no edge; every
  import between two folders counts, so imports that run back up between folders are counted one per
  import, as for modules.

Usage:  python bench/imports.py [--list]
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator", "trials")


@dataclass(frozen=True)
class Import:
    """One import of a project module by another."""

    source: str
    target: str
    line: int
    kind: str  # "top", "lazy" (inside a function) or "typing" (under ``if TYPE_CHECKING:``)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` lives in (``a.b.func`` → ``a.b``), or None outside the project."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(node: ast.Import | ast.ImportFrom, package: str, modules: dict[str, Path]) -> list[str]:
    """The dotted names an import statement reaches, relative imports resolved against ``package``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    # ``from pkg import mod`` imports the module ``pkg.mod`` when there is one.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def read_imports(source: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import ``source`` makes of another project module, with where and how it is made."""
    is_package = path.name == "__init__.py"
    package = source if is_package else source.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, kind: str) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in imported_names(node, package, modules):
                target = resolve(name, modules)
                facade = is_package and target is not None and target.startswith(source + ".")
                if target is not None and target != source and not facade:
                    found.append(Import(source, target, node.lineno, kind))
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, "typing" if kind == "top" else kind)
            for stmt in node.orelse:
                visit(stmt, kind)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            kind = "lazy"
        for child in ast.iter_child_nodes(node):
            visit(child, kind)

    visit(ast.parse(path.read_text(), str(path)), "top")
    return found


def folder_of(module: str) -> str:
    """The folder a module is in: ``orchestrator.run.runner`` → ``orchestrator.run``, ``trials.model`` →
    ``trials``; a module directly in ``orchestrator/`` (and the package itself) is its own."""
    parts = module.split(".")
    return parts[0] if parts[0] != "orchestrator" else ".".join(parts[:2])


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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
            connect(node)
    return sorted(components)


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each module's floor: one above the highest module it imports (a circle shares one floor)."""
    component_of = {m: tuple(c) for c in strongly_connected(graph) for m in c}
    floor: dict[str, int] = {}

    def climb(node: str) -> int:
        if node in floor:
            return floor[node]
        members = set(component_of.get(node, (node,)))
        below = {t for m in members for t in graph[m]} - members
        height = 1 + max((climb(t) for t in below), default=-1)
        for m in members:
            floor[m] = height
        return height

    for node in sorted(graph):
        climb(node)
    return floor


def layering(modules: Iterable[str], imports: list[Import]) -> tuple[list[list[str]], dict[str, int]]:
    """The circles of the whole graph, and the floors drawn without the lazy and TYPE_CHECKING
    imports that close them."""
    modules = sorted(modules)
    every: dict[str, set[str]] = {m: set() for m in modules}
    for i in imports:
        every[i.source].add(i.target)
    circles = strongly_connected(every)
    circle_of = {m: n for n, c in enumerate(circles) for m in c}
    kept: dict[str, set[str]] = {m: set() for m in modules}
    for i in imports:
        inside = circle_of.get(i.source, -1) == circle_of.get(i.target, -2)
        if i.kind == "top" or not inside:
            kept[i.source].add(i.target)
    return circles, floors(kept)


def longest_positional(paths: list[Path], count: int = 3) -> list[tuple[int, str]]:
    """The functions that take the most positional parameters (``self``/``cls`` not counted)."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
                if names and names[0] in ("self", "cls"):
                    names = names[1:]
                found.append((len(names), f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(found, key=lambda f: (-f[0], f[1]))[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="also print every module's floor and every folder's")
    args = parser.parse_args()

    modules = find_modules()
    imports = sorted(
        {i for name, path in modules.items() for i in read_imports(name, path, modules)},
        key=lambda i: (i.source, i.line, i.target),
    )
    circles, floor = layering(modules, imports)
    back_up = [i for i in imports if floor[i.target] >= floor[i.source]]
    flat = sorted(m for m, p in modules.items() if p.parent == ROOT / "orchestrator" and p.name != "__init__.py")
    widest = longest_positional(list(modules.values()))
    between = [i for i in imports if folder_of(i.source) != folder_of(i.target)]
    folder_circles, folder_floor = layering(
        {folder_of(m) for m in modules}, [replace(i, source=folder_of(i.source), target=folder_of(i.target)) for i in between],
    )
    folder_back_up = [i for i in between if folder_floor[folder_of(i.target)] >= folder_floor[folder_of(i.source)]]

    print(f"modules: {len(modules)} · floors: {max(floor.values()) + 1}")
    print(f"import circles: {len(circles)}")
    for circle in circles:
        print("  " + " ↔ ".join(circle))
    print(f"imports that run back up: {len(back_up)}")
    for i in back_up:
        print(f"  {i.source}:{i.line} ({i.kind}) → {i.target}  floor {floor[i.source]} → {floor[i.target]}")
    print(f"folders: {len(folder_floor)} · floors: {max(folder_floor.values()) + 1}")
    print(f"folder circles: {len(folder_circles)}")
    for circle in folder_circles:
        print("  " + " ↔ ".join(circle))
    print(f"folder imports that run back up: {len(folder_back_up)}")
    for i in folder_back_up:
        source, target = folder_of(i.source), folder_of(i.target)
        print(f"  {i.source}:{i.line} ({i.kind}) → {i.target}  {source} floor {folder_floor[source]} → {target} floor {folder_floor[target]}")
    print(f"modules directly in orchestrator/: {len(flat)}")
    print(f"longest positional argument list: {widest[0][0]}")
    for width, where in widest:
        print(f"  {width:>2}  {where}")
    if args.list:
        for name in sorted(modules, key=lambda m: (-floor[m], m)):
            print(f"  {floor[name]:>2}  {name}")
        print("folders:")
        for name in sorted(folder_floor, key=lambda f: (-folder_floor[f], f)):
            print(f"  {folder_floor[name]:>2}  {name}")


if __name__ == "__main__":
    main()
