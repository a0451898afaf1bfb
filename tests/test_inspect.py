"""`hpo studies / trials / best` read any study database, SQLite or PostgreSQL, and never print a password."""

from __future__ import annotations

import json

import optuna
import pytest
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from orchestrator.cli import app

runner = CliRunner()
DISTRIBUTIONS = {"learning_rate": FloatDistribution(1e-5, 1e-3, log=True), "batch_size": CategoricalDistribution([16, 32])}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    url = sa.engine.make_url(request.getfixturevalue("postgres_url"))
    return url.set(password="s3cret").render_as_string(hide_password=False)  # trust auth ignores it


@pytest.fixture
def filled(db_url):
    for summary in optuna.get_all_study_summaries(db_url):  # the PostgreSQL database lives for the whole session
        optuna.delete_study(study_name=summary.study_name, storage=db_url)
    study = optuna.create_study(study_name="nightly", storage=db_url, direction="maximize")
    for value, lr in ((0.70, 1e-4), (0.82, 3e-4), (0.75, 2e-4)):
        study.add_trial(create_trial(value=value, params={"learning_rate": lr, "batch_size": 32}, distributions=DISTRIBUTIONS,
                                     user_attrs={"mlflow_run_id": f"run{value}", "state_reason": "completed"}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"learning_rate": 1e-5, "batch_size": 16}, distributions=DISTRIBUTIONS,
                                 intermediate_values={1: 0.4}, user_attrs={"state_reason": "stopped early after 1 epoch(s)"}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"learning_rate": 1e-3, "batch_size": 16}, distributions=DISTRIBUTIONS,
                                 user_attrs={"state_reason": "NonFiniteLossError: training loss became nan"}))
    optuna.create_study(study_name="other", storage=db_url)
    return db_url


def _invoke(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    return result.output


def test_studies(filled):
    rows = json.loads(_invoke("studies", "--db", filled, "--json"))
    nightly = next(row for row in rows if row["study"] == "nightly")
    assert nightly["trials"] == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1}
    assert nightly["best_value"] == 0.82 and nightly["direction"] == "max"
    assert {row["study"] for row in rows} == {"nightly", "other"}
    assert "nightly" in _invoke("studies", "--db", filled)


def test_trials_filter_and_sort(filled):
    rows = json.loads(_invoke("trials", "nightly", "--db", filled, "--sort", "value", "--json"))
    assert [row["value"] for row in rows[:3]] == [0.82, 0.75, 0.70]
    failed = json.loads(_invoke("trials", "nightly", "--db", filled, "--state", "fail", "--json"))
    assert [row["reason"] for row in failed] == ["NonFiniteLossError: training loss became nan"]
    table = _invoke("trials", "nightly", "--db", filled)
    assert "PRUNED" in table and "stopped early" in table


def test_best_prints_pasteable_yaml(filled):
    import yaml

    output = _invoke("best", "nightly", "--db", filled)
    assert output.startswith("# nightly trial 1: value 0.82")
    assert yaml.safe_load(output) == {"learning_rate": 3e-4, "batch_size": 32}
    assert [row["number"] for row in json.loads(_invoke("best", "nightly", "--db", filled, "--top", "2", "--json"))] == [1, 2]


def test_unknown_study_and_missing_database(filled, tmp_path):
    result = runner.invoke(app, ["trials", "nope", "--db", filled])
    assert result.exit_code == 2 and "no such study; studies here: nightly, other" in result.output
    result = runner.invoke(app, ["studies", "--db", f"sqlite:///{tmp_path / 'absent.db'}"])
    assert result.exit_code == 2 and "no study database there" in result.output
    assert not (tmp_path / "absent.db").exists()
    result = runner.invoke(app, ["trials", "nightly", "--db", filled, "--state", "DONE"])
    assert result.exit_code == 2 and "--state: 'DONE'" in result.output


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export(filled, tmp_path, fmt):
    import pandas as pd

    path = tmp_path / f"trials.{fmt}"
    assert f"wrote 5 trials of nightly to {path}" in _invoke("export", "nightly", "--db", filled, "--format", fmt, "--out", str(path))
    frame = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[fmt](path)
    assert len(frame) == 5
    assert sorted(frame["state"]) == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL", "PRUNED"]
    assert {"params_learning_rate", "params_batch_size", "user_attrs_state_reason", "value"} <= set(frame.columns)
    result = runner.invoke(app, ["export", "nightly", "--db", filled, "--format", "xlsx"])
    assert result.exit_code == 2 and "--format: 'xlsx'" in result.output


def test_export_while_the_first_trial_runs(tmp_path):
    """A study whose only trial is running has no duration yet: the export still writes it."""
    url = f"sqlite:///{tmp_path / 'running.db'}"
    optuna.create_study(study_name="starting", storage=url).ask(DISTRIBUTIONS)
    path = tmp_path / "trials.csv"
    assert f"wrote 1 trials of starting to {path}" in _invoke("export", "starting", "--db", url, "--out", str(path))
    assert "RUNNING" in path.read_text()


def test_best_pastes_the_fixed_values_and_shows_the_baseline_and_overlap(tmp_path):
    from datetime import datetime

    import yaml

    from orchestrator.storage.db.models import Sweep
    from orchestrator.storage.trial_attrs import SPLITS_ATTR

    url = f"sqlite:///{tmp_path / 'lora.db'}"
    study = optuna.create_study(study_name="lora", storage=url, direction="maximize")
    study.add_trial(create_trial(value=0.8, params={"learning_rate": 3e-4, "batch_size": 16}, distributions=DISTRIBUTIONS))
    study.set_user_attr(SPLITS_ATTR, {"overlap": {"validation": 25, "test": 0}, "baseline": {"val_f1_macro": 0.2037, "val_accuracy": 0.44}})
    engine = sa.create_engine(url)
    Sweep.__table__.create(engine)
    fixed = {"method": "lora", "lora_alpha_ratio": 2.0, "lora_targets": "all_linear", "warmup_ratio": 0.1}
    snapshot = {"search_space": {"params": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3}}, "fixed": fixed}}
    with engine.begin() as connection:
        connection.execute(sa.insert(Sweep).values(name="lora", config_json=json.dumps(snapshot), config_hash="0",
                                                   created_at=datetime(2026, 1, 1), updated_at=datetime(2026, 1, 1)))
    engine.dispose()
    output = _invoke("best", "lora", "--db", url)
    assert yaml.safe_load(output) == {**fixed, "learning_rate": 3e-4, "batch_size": 16}
    assert "#   majority-class baseline (validation): val_f1_macro 0.2037" in output
    assert "#   25 validation row(s) also in the training split" in output
    (row,) = json.loads(_invoke("best", "lora", "--db", url, "--json"))
    assert row["configuration"] == {**fixed, "learning_rate": 3e-4, "batch_size": 16} and row["fixed"] == fixed
    assert row["data"]["overlap"] == {"validation": 25, "test": 0} and row["data"]["baseline"]["val_f1_macro"] == 0.2037
