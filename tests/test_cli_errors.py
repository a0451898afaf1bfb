"""What `hpo` prints when it refuses: exit 2, exactly one line on stderr naming the field or option,
the value and the fix, and nothing written (no study database, no MLflow store, no results)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
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


# Bad data, each as a user meets it in `hpo run`: the field they wrote, the value, a fix that works.
def _table(folder: Path, name: str, rows: list[dict] | str) -> str:
    import pandas as pd

    path = folder / name
    if isinstance(rows, str):
        path.write_text(rows)
    else:
        pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def _rows(n: int, seed: int = 0, label: str | None = None) -> list[dict]:
    from conftest import make_rows

    return [{**row, "label": label or row["label"]} for row in make_rows(n, seed)]


def _broken_dataset_dicts(folder: Path) -> dict[str, str]:
    not_json = folder / "not_json"
    not_json.mkdir()
    (not_json / "dataset_dict.json").write_text('{"splits": ["train", "validation"')
    no_splits = folder / "no_split_folders"
    no_splits.mkdir()
    (no_splits / "dataset_dict.json").write_text('{"splits": ["train", "validation"]}')
    import datasets

    damaged = folder / "damaged_arrow"
    datasets.DatasetDict({name: datasets.Dataset.from_list(_rows(20, seed)) for seed, name in enumerate(("train", "validation"))}).save_to_disk(str(damaged))
    for arrow in damaged.rglob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[:100])
    return {"not_json": str(not_json), "no_split_folders": str(no_splits), "damaged_arrow": str(damaged)}


BAD_DATA = [  # (id, data settings given the data folder, the refusal's start, a part of its fix)
    ("test_size larger than the data", lambda d: {"test_size": 700}, "data.test_size: 700 is invalid: ", "lower test_size to 100 or less"),
    ("test_size larger than all but val", lambda d: {"train_size": None, "test_size": 600}, "data.test_size: 600 is invalid: ", "lower test_size to 498 or less"),
    ("val_size larger than the data", lambda d: {"train_size": None, "val_size": 900}, "data.val_size: 900 is invalid: ", "lower val_size to 598 or less"),
    ("val_size 1", lambda d: {"val_size": 1}, "data.val_size: 1 is invalid: ", "give 10 or more"),
    ("test_size 5", lambda d: {"test_size": 5}, "data.test_size: 5 is invalid: ", "give 10 or more, or 0 for no test split"),
    ("validation file without the label column",
     lambda d: {"validation": _table(d, "val.csv", [{"text": r["text"], "sentiment": r["label"]} for r in _rows(40)])},
     "data.validation: ", "it has no column 'label' (data.label_column); its columns are ['text', 'sentiment']: give it the same columns as data.source"),
    ("test file without the text column",
     lambda d: {"validation": _table(d, "val.csv", _rows(40)), "test": _table(d, "test.csv", [{"tweet": r["text"], "label": r["label"]} for r in _rows(40)])},
     "data.test: ", "it has no column 'text' (data.text_column)"),
    ("label column missing from the source", lambda d: {"label_column": "sentiment"}, "data.label_column: 'sentiment' is invalid: ", "set data.label_column to one of them"),
    ("empty source file", lambda d: {"source": _table(d, "empty.csv", "")}, "data.source: ", "the file is empty; give a CSV"),
    ("empty JSONL source", lambda d: {"source": _table(d, "empty.jsonl", "")}, "data.source: ", "the file holds no columns and no rows"),
    ("header-only source", lambda d: {"source": _table(d, "header.csv", "text,label\n")}, "data.source: ", "the file holds only a header"),
    ("empty validation file", lambda d: {"validation": _table(d, "val.csv", "")}, "data.validation: ", "the file is empty"),
    ("a folder as data.source", lambda d: {"source": str(d)}, "data.source: ", "a folder, not a table file; give a CSV, TSV, JSONL or Parquet file or a folder saved with DatasetDict.save_to_disk"),
    ("a folder as data.validation", lambda d: {"validation": str(d)}, "data.validation: ", "a folder, not a table file"),
    ("a table pandas cannot parse", lambda d: {"source": _table(d, "ragged.csv", "text,label\ngood,pos\nbad,neg,x,y\n")},
     "data.source: ", "cannot be read as a table (ParserError: Error tokenizing data. C error: Expected 2 fields in line 3, saw 4)"),
    ("a DatasetDict folder with broken dataset_dict.json", lambda d: {"source": _broken_dataset_dicts(d)["not_json"], "train_size": None, "val_size": None},
     "data.source: ", "not a readable saved DatasetDict"),
    ("a DatasetDict folder without its split folders", lambda d: {"source": _broken_dataset_dicts(d)["no_split_folders"], "train_size": None, "val_size": None},
     "data.source: ", "save it again with DatasetDict.save_to_disk"),
    ("a DatasetDict folder with damaged Arrow files", lambda d: {"source": _broken_dataset_dicts(d)["damaged_arrow"], "train_size": None, "val_size": None},
     "data.source: ", "not a readable saved DatasetDict"),
    ("a validation file of one class", lambda d: {"validation": _table(d, "val.csv", _rows(40, label="positive"))},
     "data.validation: ", "every row of the validation split is of class 'positive', so its F1 cannot tell configurations apart"),
    ("a split column whose validation rows are one class",
     lambda d: {"split_column": "split", "train_size": None, "val_size": None,
                "source": _table(d, "split.csv", [{**r, "split": "train"} for r in _rows(60)] + [{**r, "split": "dev"} for r in _rows(20, 1, "negative")])},
     "data.split_column: 'split' is invalid: ", "every row of the validation split is of class 'negative'"),
]


@pytest.mark.parametrize("data, starts, fix", [case[1:] for case in BAD_DATA], ids=[case[0] for case in BAD_DATA])
def test_bad_data_is_refused_in_one_line_naming_the_field(data, starts, fix, write_sweep, workdir, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    settings = data(folder)
    path = _sweep(write_sweep, workdir, data={key: value for key, value in settings.items() if value is not None})
    if any(value is None for value in settings.values()):  # a size left to its default
        sweep = yaml.safe_load(path.read_text())
        sweep["data"] = {key: value for key, value in sweep["data"].items() if settings.get(key, "") is not None}
        path.write_text(yaml.safe_dump(sweep))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(f"error: {starts}"), result.stderr
    assert fix in result.stderr, result.stderr
    _nothing_written(workdir)


def test_a_broken_dataset_dict_is_bad_input_for_the_installed_command(write_sweep, workdir, tmp_path):
    """It was exit 1, "unexpected error": bad input is exit 2, one line, naming data.source."""
    source = _broken_dataset_dicts(tmp_path)["no_split_folders"]
    path = _sweep(write_sweep, workdir, data={"source": source})
    sweep = yaml.safe_load(path.read_text())
    del sweep["data"]["train_size"], sweep["data"]["val_size"]
    path.write_text(yaml.safe_dump(sweep))
    line = _refused(_hpo("run", str(path), cwd=workdir), f"data.source: {source!r} is invalid: not a readable saved DatasetDict")
    assert "save it again with DatasetDict.save_to_disk" in line
    _nothing_written(workdir)


@pytest.mark.parametrize("space, starts", [
    ({"method": "qlora"}, "search_space.method: 'qlora' is invalid: method takes full, lora"),
    ({"method": {"type": "categorical", "choices": ["full", "qlora"]}}, "search_space.method: ['full', 'qlora'] is invalid: method takes full, lora"),
    ({"class_balance": "smote"}, "search_space.class_balance: 'smote' is invalid: class_balance takes none, weighted_loss, oversample"),
    ({"lr": 0.1}, "search_space.lr: unknown key: unknown parameter 'lr'"),
])
def test_a_search_space_value_is_named_by_its_parameter(space, starts, write_sweep, workdir):
    from conftest import TINY_SPACE

    result = runner.invoke(app, ["run", str(_sweep(write_sweep, workdir, search_space={**TINY_SPACE, **space}))])
    assert result.exit_code == 2 and result.stderr.splitlines() == [result.stderr.strip()], result.output
    assert result.stderr.startswith(f"error: {starts}"), result.stderr
    _nothing_written(workdir)
