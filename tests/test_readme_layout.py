"""The README's map of the code stays true: every module and folder it names exists, and its
"How it works" table names every concept folder of ``orchestrator/``, each above the folders it imports."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
HOW_IT_WORKS = README[README.index("## How it works"):README.index("\n## ", README.index("## How it works") + 1)]
CODE = ("orchestrator", "trials")

FULL_PATH = re.compile(r"(?<![\w./-])(?:orchestrator|trials)/(?:[\w]+/)*(?:\w+\.py)?")
SHORT_MODULE = re.compile(r"(?<![\w./-])(?:\w+/)*\w+\.py\b")


def test_every_module_and_folder_the_readme_names_exists():
    named = set(FULL_PATH.findall(README))
    assert {"orchestrator/", "orchestrator/cli/", "trials/"} <= named
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"README.md names paths that do not exist: {missing}"


def test_every_short_module_name_in_how_it_works_is_a_module():
    """``storage/lease.py`` or ``tuning.py`` beside a folder already named: some module of the code ends so."""
    modules = {p.relative_to(ROOT).as_posix() for package in CODE for p in (ROOT / package).rglob("*.py")}
    unknown = sorted(
        short for short in set(SHORT_MODULE.findall(HOW_IT_WORKS))
        if short not in modules and not any(m.endswith("/" + short) for m in modules)
    )
    assert not unknown, f"README.md's How it works names modules that do not exist: {unknown}"


def test_how_it_works_names_every_concept_folder():
    folders = {f"orchestrator/{p.parent.name}/" for p in (ROOT / "orchestrator").glob("*/__init__.py")}
    table = set(re.findall(r"^\| `(orchestrator/\w+/)` \|", HOW_IT_WORKS, re.M))
    assert table == folders, f"README.md's folder table and orchestrator/'s folders differ: {sorted(table ^ folders)}"


def test_how_it_works_names_every_module_directly_in_orchestrator():
    top = {p.name for p in (ROOT / "orchestrator").glob("*.py") if p.name != "__init__.py"}
    intro = HOW_IT_WORKS.split("| folder |")[0]
    assert top == set(re.findall(r"`(\w+\.py)`", intro)), "README.md's How it works lists the modules directly in orchestrator/"


def test_each_folder_in_the_table_imports_only_folders_below_it():
    """The table goes from the top of the house down: no import, at the top of a file, in a
    function or for the type checker, reaches a folder listed above the importing one."""
    from bench.imports import find_modules, folder_of, read_imports

    table = re.findall(r"^\| `((?:orchestrator|trials)/\w*/?)` \|", HOW_IT_WORKS, re.M)
    height = {path.rstrip("/").replace("/", "."): len(table) - n for n, path in enumerate(table)}
    modules = find_modules()
    upward = sorted(
        f"{i.source}:{i.line} → {i.target}"
        for name, path in modules.items() for i in read_imports(name, path, modules)
        if height.get(folder_of(i.target), 0) > height.get(folder_of(i.source), len(table) + 1)
    )
    assert not upward, f"imports that reach a folder above theirs in README.md's table: {upward}"
