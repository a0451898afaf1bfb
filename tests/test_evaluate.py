"""`hpo evaluate STUDY --data FILE`: the study's registered model scored on a labelled file later,
writing nothing. Input errors are checked on hand-made studies (no Ray, no model); scoring runs
on the model a real tiny sweep registered, read back through `hpo evaluate` as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.storage.trial_attrs import ANSWER_ATTR
from tests.conftest import TINY_SPACE, make_rows, registered_model

runner = CliRunner()
HPO = str(Path(sys.executable).parent / "hpo")
MODEL_NAME = "tiny-evaluate"
ANSWER = {"trial": 0, "params": {"learning_rate": 0.01}, "metric": "val_f1_macro", "search_value": 0.5, "search_trials": 1}


def _fingerprint(*paths: Path) -> list[tuple[str, bytes, int]]:
    """Each file's name, bytes and modification time: what a read-only command must leave as it was."""
    return [(path.name, path.read_bytes(), path.stat().st_mtime_ns) for path in paths]


def _one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture
def hand_made(tmp_path):
    """A study database with studies as `hpo run` would leave them, minus the model: one without an
    answer, one whose answer has no registered model, one registered, one image-classification sweep."""
    import sqlalchemy

    from orchestrator.storage.db.models import Sweep

    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, answer in (("bare", None), ("unregistered", ANSWER), ("registered", {**ANSWER, "registered": "m/1"}), ("images", None)):
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        study.optimize(lambda trial: trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True), n_trials=1)
        if answer is not None:
            study.set_user_attr(ANSWER_ATTR, answer)
    engine = sqlalchemy.create_engine(url)
    Sweep.__table__.create(engine)
    with engine.begin() as connection:
        now = datetime(2026, 1, 1)
        connection.execute(sqlalchemy.insert(Sweep).values(name="images", config_json=json.dumps({"task": "image-classification"}),
                                                           config_hash="0", created_at=now, updated_at=now))
    engine.dispose()
    data = tmp_path / "month.csv"
    pd.DataFrame(make_rows(20, seed=5)).to_csv(data, index=False)
    return url, tmp_path / "study.db", data


@pytest.mark.parametrize("args, message", [
    (["nope"], "error: STUDY: 'nope' is invalid: no such study; studies here: bare, images, registered, unregistered"),
    (["bare"], "error: STUDY: 'bare' is invalid: the study has no registered model: set registered_model: NAME in the sweep file and run it, or pass --model-uri"),
    (["unregistered"], "the study has no registered model: set registered_model: NAME"),
    (["images"], "error: STUDY: 'images' is invalid: its task is image-classification; hpo evaluate scores text-classification models only for now: load its registered model with mlflow.transformers.load_model"),
    (["registered", "--data", "{tmp}/absent.csv"], "error: --data: '{tmp}/absent.csv' is invalid: no such file"),
    (["registered", "--text-column", "body"], "error: --text-column: 'body' is invalid: column 'body' is not in the data; its columns are ['text', 'label']"),
    (["registered", "--mlflow", "sqlite:///{tmp}/absent-mlruns.db"], "is invalid: no MLflow database there; pass the sweep's storage.mlflow"),
    (["registered", "--db", "sqlite:///{tmp}/absent.db"], "no study database there"),
    (["registered", "--device", "cuda:99"], "error: --device: 'cuda:99' is invalid"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(hand_made, tmp_path, args, message):
    url, database, data = hand_made
    before, files = _fingerprint(database, data), sorted(tmp_path.iterdir())
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    defaults = {"--data": str(data), "--db": url, "--mlflow": f"sqlite:///{tmp_path / 'absent-mlruns.db'}"}
    result = runner.invoke(app, ["evaluate", *args, *(item for key, value in defaults.items() if key not in args for item in (key, value))])
    assert message.replace("{tmp}", str(tmp_path)) in _one_line_error(result)
    assert _fingerprint(database, data) == before and sorted(tmp_path.iterdir()) == files  # no MLflow database created either


def test_bad_input_with_json_prints_one_error_document(hand_made):
    url, _, data = hand_made
    result = runner.invoke(app, ["evaluate", "bare", "--db", url, "--data", str(data), "--json"])
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["exit_code"] == 2 and "no registered model" in document["error"]


def test_scores_use_the_labels_seen_and_the_model_s_label_order():
    import numpy as np

    from orchestrator.reports.evaluate import score

    labels = ["negative", "neutral", "positive"]
    metrics, per_class, confusion, notes = score(np.array([0, 0, 2, 2]), np.array([0, 2, 2, 2]), labels)
    assert metrics["accuracy"] == 0.75 and metrics["recall_macro"] == 0.75  # over negative and positive: neutral neither occurs nor is predicted
    assert per_class["neutral"] == {"f1": None, "rows": 0, "predicted": 0} and per_class["positive"]["predicted"] == 3
    assert confusion == [[1, 0, 1], [0, 0, 0], [0, 0, 2]]
    assert notes == ["no rows labelled neutral in the file; neutral left out of the macro averages"]


# ---- the real thing: a sweep registers its model, `hpo evaluate` scores it on a new month's data ----


def _env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("RAY_ADDRESS", None)
    env.pop("HPO_MLFLOW", None)
    return env


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tiny_model, tiny_csv):
    """A one-trial, one-epoch sweep with registered_model: (folder, study DB, MLflow DB, its answer)."""
    folder = tmp_path_factory.mktemp("evaluate")
    sweep = {
        "name": "evaluate", "model": str(tiny_model),
        "data": {"source": str(tiny_csv), "text_column": "text", "label_column": "label", "max_length": 16, "train_size": 400, "val_size": 100},
        "search_space": TINY_SPACE, "trial": {"max_epochs": 1}, "budget": {"n_trials": 1, "max_concurrent": 1},
        "sampler": {"name": "tpe", "seed": 0}, "resources": {"cpu": 1, "gpu": 0}, "registered_model": MODEL_NAME,
        "storage": {"study_db": f"sqlite:///{folder / 'study.db'}", "mlflow": f"sqlite:///{folder / 'mlruns.db'}", "results_dir": str(folder / "runs")},
    }
    path = folder / "evaluate.yaml"
    path.write_text(yaml.safe_dump(sweep))
    run = subprocess.run([HPO, "run", str(path), "--json"], capture_output=True, text=True, env=_env(), timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    answer = json.loads(run.stdout)["answer"]
    assert answer["registered"] == f"{MODEL_NAME}/1", answer
    return folder, folder / "study.db", folder / "mlruns.db", answer


def _new_month(folder: Path) -> Path:
    """A labelled file the sweep never saw, with one row without a label and one without a text."""
    rows = make_rows(60, seed=11) + [{"text": "good great", "label": None}, {"text": "  ", "label": "positive"}]
    path = folder / "month" / "new_month.csv"
    path.parent.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _mlflow_runs(mlflow_db: Path) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{mlflow_db}")
    return sorted(run.info.run_id for run in client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000))


def _independent_scores(mlflow_db: Path, data: Path) -> tuple[dict, dict, int]:
    """The registered model's metrics on ``data``, computed here with scikit-learn from its own predictions."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    frame = pd.read_csv(data).dropna()
    frame = frame[frame["text"].str.strip() != ""]
    classifier = registered_model(f"sqlite:///{mlflow_db}", f"{MODEL_NAME}/1")
    predicted = [output["label"] for output in classifier(frame["text"].tolist(), batch_size=7, truncation=True, max_length=16)]
    truth = frame["label"].tolist()
    metrics = {
        "accuracy": accuracy_score(truth, predicted),
        "precision_macro": precision_score(truth, predicted, average="macro", zero_division=0),
        "recall_macro": recall_score(truth, predicted, average="macro", zero_division=0),
        "f1_macro": f1_score(truth, predicted, average="macro", zero_division=0),
    }
    labels = sorted(set(truth))
    per_class = dict(zip(labels, f1_score(truth, predicted, labels=labels, average=None, zero_division=0), strict=True))
    return metrics, per_class, len(frame)


@pytest.mark.slow
def test_evaluate_scores_the_registered_model_on_a_new_file_and_writes_nothing(registered, tmp_path):
    folder, study_db, mlflow_db, answer = registered
    data = _new_month(tmp_path)
    before, runs_before = _fingerprint(study_db, mlflow_db), _mlflow_runs(mlflow_db)
    work = tmp_path / "cwd"
    work.mkdir()
    result = subprocess.run([HPO, "evaluate", "evaluate", "--db", f"sqlite:///{study_db}", "--mlflow", f"sqlite:///{mlflow_db}",
                             "--data", str(data), "--batch-size", "5", "--json"], capture_output=True, text=True, env=_env(), cwd=work, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)  # stdout holds the one JSON document and nothing else

    assert document["ok"] is True
    assert document["measured"] == f"model {MODEL_NAME} v1 (study evaluate, trial {answer['trial']}) on {data} (60 rows)"
    assert (document["model_uri"], document["trial"], document["rows"], document["dropped"]) == (f"models:/{MODEL_NAME}/1", answer["trial"], 60, 2)
    assert (document["max_length"], document["text_column"], document["label_column"]) == (16, "text", "label")  # the sweep's
    metrics, per_class, rows = _independent_scores(mlflow_db, data)
    assert rows == 60 and document["metrics"] == pytest.approx(metrics, abs=1e-9)
    assert {label: counts["f1"] for label, counts in document["per_class"].items()} == pytest.approx(per_class, abs=1e-9)
    assert sum(counts["rows"] for counts in document["per_class"].values()) == 60 == sum(map(sum, document["confusion"]))
    assert document["study_test"]["rows"] == answer["test"]["rows"]
    assert document["study_test"]["metrics"]["f1_macro"] == answer["test"]["metrics"]["test_f1_macro"]
    assert document["study_test"]["per_class_f1"]["negative"] == answer["test"]["metrics"]["test_f1_class.negative"]

    assert _fingerprint(study_db, mlflow_db) == before and _mlflow_runs(mlflow_db) == runs_before
    assert list(work.iterdir()) == []  # no mlruns folder, no downloaded model left behind


@pytest.mark.slow
def test_evaluate_any_model_uri_prints_what_was_measured(registered, tmp_path):
    folder, study_db, mlflow_db, answer = registered
    rows = make_rows(30, seed=12)
    data = tmp_path / "april.jsonl"
    pd.DataFrame(rows).rename(columns={"text": "body", "label": "sentiment"}).to_json(data, orient="records", lines=True)
    uri = f"runs:/{answer['test']['run_id']}/model"  # the run the registered version was logged on
    result = runner.invoke(app, ["evaluate", "evaluate", "--db", f"sqlite:///{study_db}", "--mlflow", f"sqlite:///{mlflow_db}", "--data", str(data),
                                 "--model-uri", uri, "--text-column", "body", "--label-column", "sentiment"])
    assert result.exit_code == 0, result.output
    assert f"model {uri} (study evaluate) on {data} (30 rows)" in result.output
    for line in ("accuracy", "precision (macro)", "recall (macro)", "F1 (macro)", "F1 negative", "Nothing was written to the study or MLflow."):
        assert line in result.output


@pytest.mark.slow
def test_labels_the_model_does_not_know_exit_2_naming_them(registered, tmp_path):
    folder, study_db, mlflow_db, _ = registered
    data = tmp_path / "new_labels.csv"
    pd.DataFrame(make_rows(10, seed=13) + [{"text": "so so", "label": "mixed"}, {"text": "what", "label": "angry"}]).to_csv(data, index=False)
    before = _fingerprint(study_db, mlflow_db)
    result = subprocess.run([HPO, "evaluate", "evaluate", "--db", f"sqlite:///{study_db}", "--mlflow", f"sqlite:///{mlflow_db}", "--data", str(data)],
                            capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert "labels 'angry', 'mixed' not known to the model (it predicts negative, neutral, positive)" in result.stderr
    assert _fingerprint(study_db, mlflow_db) == before
