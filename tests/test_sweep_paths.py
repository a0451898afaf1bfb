"""Relative paths in a sweep file start at the sweep file's folder, whatever the working directory,
and reach the driver and every Ray worker (each trial runs in a folder of its own) as absolute paths."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import ConfigError
from orchestrator.run.runner import validate
from orchestrator.sweep.config import load_sweep, parse_sweep
from tests.conftest import TINY_SPACE, make_rows

REPO = Path(__file__).resolve().parent.parent


def _sweep(**overrides) -> dict:
    return {"name": "paths", "model": "org/name", "data": {"source": "bundled:tweets-sentiment"},
            "search_space": "text_classification", **overrides}


@pytest.mark.parametrize("model", ["org/name", "bert-base-uncased", "bundled:minilm-l6"])
def test_hub_ids_and_bundled_models_stay_as_written(tmp_path, monkeypatch, model):
    (tmp_path / "elsewhere" / "org" / "name").mkdir(parents=True)  # a folder of that name in the working directory does not count
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert parse_sweep(_sweep(model=model), tmp_path / "project").model == model


@pytest.mark.parametrize("model, expected", [
    ("./my-model", "project/my-model"),
    ("../models/m", "models/m"),
    ("my-model", "project/my-model"),  # no ./, but the folder is there
    ("org/name", "project/org/name"),  # likewise: a folder beside the sweep file wins over the hub id
    (".", "project"),
])
def test_model_folders_resolve_against_the_sweep_file(tmp_path, monkeypatch, model, expected):
    (tmp_path / "project" / "my-model").mkdir(parents=True)
    (tmp_path / "project" / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert parse_sweep(_sweep(model=model), tmp_path / "project").model == str(tmp_path / expected)


def test_home_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = parse_sweep(_sweep(model="~/models/m", data={"source": "/data/train.csv"}), tmp_path)
    assert config.model == str(tmp_path / "home" / "models" / "m")
    assert config.data.source == "/data/train.csv"


@pytest.mark.parametrize("source, expected", [
    ("train.csv", "{base}/train.csv"),
    ("../shared/photos/", "{parent}/shared/photos"),
    ("bundled:tweets-sentiment", "bundled:tweets-sentiment"),
])
def test_data_sources_resolve_against_the_sweep_file(tmp_path, source, expected):
    base = tmp_path / "project"
    config = parse_sweep(_sweep(data={"source": source}), base)
    assert config.data.source == expected.format(base=base, parent=tmp_path)


@pytest.mark.parametrize("url, expected", [
    ("sqlite:///hpo.db", "sqlite:///{base}/hpo.db"),
    ("sqlite:///../dbs/hpo.db?timeout=30", "sqlite:///{parent}/dbs/hpo.db?timeout=30"),
    ("sqlite:////var/hpo/hpo.db", "sqlite:////var/hpo/hpo.db"),
    ("sqlite://", "sqlite://"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("postgresql+psycopg://hpo:s3cret@db.internal:5432/studies", "postgresql+psycopg://hpo:s3cret@db.internal:5432/studies"),
])
def test_sqlite_files_resolve_and_other_databases_stay(tmp_path, url, expected):
    base = tmp_path / "project"
    storage = parse_sweep(_sweep(storage={"study_db": url, "mlflow": url}), base).storage
    assert storage.study_db == storage.mlflow == expected.format(base=base, parent=tmp_path)


def test_storage_defaults_and_servers(tmp_path):
    storage = parse_sweep(_sweep(), tmp_path).storage
    assert storage.study_db == f"sqlite:///{tmp_path}/hpo.db" and storage.mlflow == f"sqlite:///{tmp_path}/mlruns.db"
    assert storage.results_dir == str(tmp_path / "hpo_runs")
    servers = parse_sweep(_sweep(storage={"mlflow": "http://mlflow:5000", "results_dir": "s3://bucket/hpo"}), tmp_path).storage
    assert servers.mlflow == "http://mlflow:5000" and servers.results_dir == "s3://bucket/hpo"


def test_environment_variables_expand_before_paths_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_TEST_ABS", str(tmp_path / "shared"))
    monkeypatch.setenv("HPO_TEST_REL", "dbs")
    storage = parse_sweep(_sweep(storage={"study_db": "sqlite:///${HPO_TEST_ABS}/hpo.db", "mlflow": "sqlite:///${HPO_TEST_REL}/mlruns.db",
                                          "results_dir": "${HPO_TEST_REL}/runs"}), tmp_path / "project").storage
    assert storage.study_db == f"sqlite:///{tmp_path}/shared/hpo.db"
    assert storage.mlflow == f"sqlite:///{tmp_path}/project/dbs/mlruns.db" and storage.results_dir == str(tmp_path / "project" / "dbs" / "runs")


def test_the_demo_keeps_its_files_in_the_repository_root():
    """The README's commands (run from the repository root) look for sqlite:///hpo.db and sqlite:///mlruns.db there."""
    storage = load_sweep(REPO / "sweeps" / "demo.yaml").storage
    assert storage.study_db == f"sqlite:///{REPO}/hpo.db" and storage.mlflow == f"sqlite:///{REPO}/mlruns.db"
    assert storage.results_dir == str(REPO / "hpo_runs")


def test_a_hub_id_shadowed_by_a_folder_in_the_working_directory_is_refused(tmp_path, monkeypatch, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "elsewhere" / "my-model")
    monkeypatch.chdir(tmp_path / "elsewhere")
    (tmp_path / "project").mkdir()  # where the sweep writes exists: it is checked first
    config = parse_sweep(_sweep(model="my-model"), tmp_path / "project")
    with pytest.raises(ConfigError, match=r"^model: 'my-model' is invalid: a hub id, but the working directory has a folder of that name"):
        validate(config)


def _text_project(project: Path, tiny_model: Path) -> Path:
    """A sweep whose model folder, data file, search-space file and storage are all relative to it."""
    import pandas as pd

    shutil.copytree(tiny_model, project / "my-model")
    (project / "data").mkdir()
    pd.DataFrame(make_rows(60)).to_csv(project / "data" / "train.csv", index=False)
    return _write_project(project, model="my-model", data={"source": "data/train.csv", "max_length": 16, "train_size": 40, "val_size": 20},
                          space={**TINY_SPACE, "batch_size": 16, "unfreeze_depth": 1})


def _image_project(project: Path) -> Path:
    """Likewise for images: a tiny ViT in ./vit, a folder of class folders, search space and storage."""
    from PIL import Image
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    ViTModel(config, add_pooling_layer=False).save_pretrained(project / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(project / "vit")
    rng = np.random.default_rng(0)
    for label, brightness in (("dark", 40), ("light", 210)):
        (project / "photos" / label).mkdir(parents=True)
        for index in range(15):
            pixels = np.clip(rng.normal(brightness, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(project / "photos" / label / f"{index:02d}.png")
    space = {"learning_rate": {"type": "float", "low": 1e-3, "high": 5e-3, "log": True}, "batch_size": 8, "unfreeze_depth": 1}
    return _write_project(project, task="image-classification", model="./vit", data={"source": "photos", "train_size": 16, "val_size": 10}, space=space)


def _write_project(project: Path, space: dict, **sweep) -> Path:
    (project / "spaces").mkdir()
    (project / "spaces" / "space.yaml").write_text(yaml.safe_dump(space))
    sweep = {"name": "relative", **sweep, "search_space": "spaces/space.yaml",
             "trial": {"max_epochs": 1, "checkpoint": False}, "budget": {"n_trials": 1, "max_concurrent": 1},
             "resources": {"cpu": 1, "gpu": 0},
             "storage": {"study_db": "sqlite:///study.db", "mlflow": "sqlite:///mlruns.db", "results_dir": "runs"}}
    path = project / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def test_cli_validate_from_another_directory(tmp_path, monkeypatch, tiny_model):
    (tmp_path / "project").mkdir()
    _text_project(tmp_path / "project", tiny_model)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = CliRunner().invoke(app, ["validate", "../project/sweep.yaml", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["model"] == str(tmp_path / "project" / "my-model") and summary["train_size"] == 40
    assert summary["study_db"] == f"sqlite:///{tmp_path}/project/study.db"
    assert list((tmp_path / "elsewhere").iterdir()) == [] and not (tmp_path / "project" / "study.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["text-classification", "image-classification"])
def test_hpo_run_from_another_directory_with_every_path_relative(tmp_path, tiny_model, task):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    _text_project(project, tiny_model) if task == "text-classification" else _image_project(project)
    hpo = shutil.which("hpo", path=str(Path(sys.executable).parent)) or "hpo"

    completed = subprocess.run([hpo, "run", "../project/sweep.yaml", "--json"], cwd=elsewhere, capture_output=True, text=True,
                               timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert result["ok"] and result["study_trials"] == {"COMPLETE": 1}, result
    assert (project / "study.db").is_file() and (project / "mlruns.db").is_file() and (project / "runs" / "ray").is_dir()
    assert list(elsewhere.iterdir()) == []


def test_the_look_at_the_results_commands_show_sqlite_files_below_here_relative(tmp_path, monkeypatch):
    from orchestrator.cli.output import from_here

    monkeypatch.chdir(tmp_path)
    assert from_here(f"sqlite:///{tmp_path}/hpo.db") == "sqlite:///hpo.db"  # as the README shows after make demo
    assert from_here(f"sqlite:///{tmp_path}/sweeps/x.db?timeout=5") == "sqlite:///sweeps/x.db?timeout=5"
    for url in ("sqlite:////elsewhere/hpo.db", "sqlite://", "postgresql+psycopg://hpo:***@db/studies", "http://mlflow:5000", "databricks"):
        assert from_here(url) == url


@pytest.mark.parametrize("folder, cwd", [
    ("project", "."),  # below the working directory: a relative path
    ("project", "elsewhere"),  # beside it: an absolute one
    ("my project", "."),  # a space: quoted for the shell
    ("project", "project/sub"),  # above it
])
@pytest.mark.parametrize("query", ["", "?timeout=30"])
def test_the_look_at_the_results_commands_find_the_files_when_pasted_where_hpo_ran(tmp_path, monkeypatch, folder, cwd, query):
    """Each printed command, split as a shell splits it, names the sweep's SQLite files as seen from the working directory."""
    import io
    import shlex

    from rich.console import Console
    from sqlalchemy.engine import make_url

    from orchestrator.cli import output
    from orchestrator.run.result import SweepResult

    (tmp_path / folder).mkdir()
    (tmp_path / cwd).mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path / cwd)
    study_db, mlflow = f"sqlite:///{tmp_path / folder / 'hpo.db'}{query}", f"sqlite:///{tmp_path / folder / 'mlruns.db'}{query}"
    result = SweepResult(study_name="s", metric="val_f1_macro", mode="max", trials_this_run={}, study_trials={}, best=None, top=[],
                         baseline={}, duration_s=1.0, study_db=study_db, mlflow_uri=mlflow, mlflow_experiment_id="1", parent_run_id=None)
    buffer = io.StringIO()
    monkeypatch.setattr(output, "out", Console(file=buffer, width=300, color_system=None))
    output.print_result(result)

    commands = [shlex.split(line, comments=True) for line in buffer.getvalue().split("Look at the results")[1].splitlines()[1:] if line.strip()]
    named = {word for words in commands for word in words if word.startswith("sqlite:")}
    assert len(commands) == 4 and len(named) == 2
    for url in named:
        database = make_url(url).database
        assert (Path.cwd() / database).resolve() in {tmp_path / folder / "hpo.db", tmp_path / folder / "mlruns.db"}, url
