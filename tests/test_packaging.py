"""The built wheel holds every package and the files they read at run time (the study database's
migrations, the search-space presets), and building it warns about nothing setuptools discovers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_the_migrations_and_presets_and_builds_without_warnings(tmp_path):
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    source = tmp_path / "source"  # a copy of the tracked files: the build writes nothing into the checkout
    for name in tracked:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(source)],
                           capture_output=True, text=True, timeout=600)

    assert built.returncode == 0, built.stderr[-3000:]
    assert "absent from the `packages` configuration" not in built.stdout + built.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    expected = {name for name in tracked if name.startswith(("orchestrator/", "trials/", "search_spaces/"))}
    assert expected - inside == set()
    assert {"orchestrator/storage/db/migrations/env.py", "orchestrator/storage/db/migrations/script.py.mako",
            "orchestrator/storage/db/migrations/versions/0001_initial.py", "search_spaces/text_classification.yaml"} <= inside
    assert not any(name.startswith(("tests/", "bench/", "examples/")) for name in inside)
