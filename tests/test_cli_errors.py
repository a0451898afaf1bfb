"""What `hpo` prints when it refuses: exit 2, exactly one line on stderr naming the field or option,
the value and the fix, and nothing written (no study database, no MLflow store, no results)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.exit_codes import EXIT_CODE_MEANINGS

ROOT = Path(__file__).resolve().parent.parent
HPO = str(Path(sys.executable).parent / "hpo")
runner = CliRunner()


def _hpo(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    environment.pop("RAY_ADDRESS", None)
    environment.update(env or {})
    return subprocess.run([HPO, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=environment)


def _refused(done, starts: str) -> str:
    """The one line of a refusal (exit 2) that starts with ``error: {starts}``."""
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {starts}"), lines[0]
    return lines[0]


def _nothing_written(folder: Path) -> None:
    assert sorted(path.name for path in folder.iterdir()) == []


@pytest.fixture
def workdir(tmp_path):
    """A folder the refused commands run in: the default sqlite:///hpo.db would land here."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def _sweep(write_sweep, workdir, **overrides) -> Path:
    storage = {"study_db": f"sqlite:///{workdir / 'hpo.db'}", "mlflow": f"sqlite:///{workdir / 'mlruns.db'}", "results_dir": str(workdir / "runs")}
    return write_sweep(storage={**storage, **overrides.pop("storage", {})}, **overrides)


def test_json_summary_into_a_missing_folder_is_refused_before_the_sweep(write_sweep, workdir):
    done = _hpo("run", str(_sweep(write_sweep, workdir)), "--json-summary", "reports/summary.json", cwd=workdir)
    line = _refused(done, "--json-summary: 'reports/summary.json' is invalid: ")
    assert "folder reports does not exist" in line
    _nothing_written(workdir)


def test_malformed_ray_address_is_refused(write_sweep, workdir):
    done = _hpo("run", str(_sweep(write_sweep, workdir)), "--ray-address", "head node:6379", cwd=workdir)
    assert "ray://HOST:10001" in _refused(done, "--ray-address: 'head node:6379' is invalid: not a Ray address")
    _nothing_written(workdir)


def test_unsupported_mlflow_scheme_is_refused_by_validate_and_run(write_sweep, workdir):
    path = _sweep(write_sweep, workdir, storage={"mlflow": "ftp://hpo:s3cret@files.internal/mlruns"})
    for command in ("validate", "run"):
        line = _refused(_hpo(command, str(path), cwd=workdir), "storage.mlflow: 'ftp://hpo:***@files.internal/mlruns' is invalid: unsupported scheme 'ftp'")
        assert "s3cret" not in line
    _nothing_written(workdir)


def test_ray_address_from_the_environment_is_named_as_such(write_sweep, workdir, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    result = runner.invoke(app, ["validate", str(_sweep(write_sweep, workdir)), "--json"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: RAY_ADDRESS: 'http://head:8265' is invalid: that is a web address")
    assert json.loads(result.stdout)["exit_code"] == 2
    _nothing_written(workdir)


@pytest.mark.parametrize("command", ["export", "report"])
def test_out_into_a_missing_folder_is_refused(workdir, command):
    result = runner.invoke(app, [command, "nightly", "--db", f"sqlite:///{workdir / 'hpo.db'}", "--out", str(workdir / "missing" / "out.html")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --out: ") and "does not exist; create it or change the path" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    _nothing_written(workdir)


def test_out_that_is_a_folder_is_refused(workdir):
    result = runner.invoke(app, ["export", "nightly", "--db", f"sqlite:///{workdir / 'hpo.db'}", "--out", str(workdir)])
    assert result.exit_code == 2 and "--out: " in result.stderr and "it is a folder" in result.stderr


USAGE_ERRORS = [
    (["run", "sweep.yaml", "--n-trials", "-3"], "--n-trials: -3 is invalid: give a whole number of trials, 1 or more, e.g. --n-trials 8"),
    (["run", "sweep.yaml", "--n-trials=many"], "--n-trials: 'many' is invalid: give a whole number"),
    (["run", "sweep.yaml", "--total-trials", "0"], "--total-trials: 0 is invalid: "),
    (["run", "sweep.yaml", "--wait", "-1"], "--wait: -1 is invalid: give seconds, 0 or more"),
    (["best", "nightly", "--top", "0"], "--top: 0 is invalid: give a whole number, 1 or more, e.g. --top 3"),
    (["run", "sweep.yaml", "--n-trial", "3"], "--n-trial: no such option of hpo run; did you mean --n-trials"),
    (["run", "sweep.yaml", "--n-trials"], "--n-trials: "),
    (["run"], "SWEEP: is missing: give the sweep file"),
    (["best"], "STUDY: is missing: "),
    (["report", "nightly"], "--out: is missing: give the file to write"),
    (["rnu", "sweep.yaml"], "hpo: no such command 'rnu'"),
    (["run", "a.yaml", "b.yaml"], "hpo run: got unexpected extra argument"),
]


@pytest.mark.parametrize("args, line", USAGE_ERRORS, ids=[" ".join(case[0]) for case in USAGE_ERRORS])
def test_usage_errors_are_one_line_naming_the_option(args, line, workdir):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr  # one line, no usage box
    assert result.stderr.startswith(f"error: {line}"), result.stderr
    assert result.stdout == ""
    _nothing_written(workdir)


def test_usage_error_with_json_is_one_json_document():
    result = runner.invoke(app, ["run", "sweep.yaml", "--json", "--n-trials", "-3"])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"ok": False, "error": "--n-trials: -3 is invalid: give a whole number of trials, 1 or more, e.g. --n-trials 8", "exit_code": 2}
    assert len(result.stderr.splitlines()) == 1


def test_usage_error_from_the_installed_command(workdir):
    """The real `hpo` executable (not the test runner) prints the same one line."""
    done = _hpo("best", "nightly", "--top", "0", cwd=workdir)
    assert done.stdout == ""
    _refused(done, "--top: 0 is invalid: give a whole number, 1 or more")
    _nothing_written(workdir)


def test_help_still_works():
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    words = " ".join(top.stdout.replace("│", " ").split())  # the help panel's lines, unwrapped
    assert all(f"{int(code)} {meaning}" in words for code, meaning in EXIT_CODE_MEANINGS.items())
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0 and "--n-trials" in result.stdout
    bare = runner.invoke(app, [])  # plain `hpo` shows the help, as before
    assert bare.exit_code == 2 and "validate" in bare.output and "error:" not in bare.output
