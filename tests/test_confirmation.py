"""Seeds that do not decide the winner, and a test split no trial ever sees: confirmation runs in
the study, the ledger and MLflow; the chosen configuration's search, confirmed and test scores;
a confirmation killed half-way resumes on the next run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import described_inputs, make_rows, mlflow_runs
from optuna.trial import TrialState
from ray import cloudpickle

from orchestrator.answer.confirm import SEED_PARAM, confirmation_study_name
from orchestrator.answer.settle import stored_answer
from orchestrator.api import load_sweep
from orchestrator.run.runner import RunOptions, run_sweep
from orchestrator.storage.trial_attrs import CONFIRMS

pytestmark = pytest.mark.slow

# Ray workers unpickle the trial function below; they cannot import this test module, so it travels by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HPO = str(Path(sys.executable).parent / "hpo")
# A text that no training or validation row can be: train rows hold at most 6 neutral words.
TEST_ONLY_TEXT = " ".join(["plane"] * 7)


def _sweep(write_sweep, tmp_path, name: str, budget: dict | None = None, **overrides):
    test = tmp_path / "test.csv"
    pd.DataFrame([{"text": TEST_ONLY_TEXT, "label": "neutral"}] * 5 + make_rows(40, seed=9)).to_csv(test, index=False)
    validation = tmp_path / "val.csv"
    pd.DataFrame(make_rows(60, seed=8)).to_csv(validation, index=False)
    return write_sweep(
        name=name, data={"validation": str(validation), "test": str(test), "train_size": 200, "val_size": None},
        trial={"max_epochs": 1}, budget=budget or {"n_trials": 3, "max_concurrent": 2}, **overrides,
    )


def _sequence(data) -> list[np.ndarray]:
    """Every token-id sequence a trial's data holds, in any of its attributes."""
    return [split.ids[split.offsets[i] : split.offsets[i + 1]] for split in vars(data).values()
            if hasattr(split, "offsets") for i in range(len(split))]


def _run_trial_checking_its_data(config, settings, data):
    """The built-in trial, after checking that no test row reached it (the test file's marker text)."""
    from transformers import AutoTokenizer

    from trials.entrypoint import run_trial

    marker = AutoTokenizer.from_pretrained(settings.model_path)(TEST_ONLY_TEXT)["input_ids"]
    if any(list(ids) == marker for ids in _sequence(data)):
        raise AssertionError("a test row reached a trial")
    run_trial(config, settings, data)


def test_confirmation_chooses_by_mean_and_scores_on_a_test_split_no_trial_saw(ray_session, write_sweep, tmp_path):
    config = load_sweep(_sweep(write_sweep, tmp_path, "confirmed", confirm={"top_k": 2, "seeds": 2}))
    result = run_sweep(config, RunOptions(trial_function=_run_trial_checking_its_data))

    study = optuna.load_study(study_name=config.name, storage=config.storage.study_db)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3  # a test row in a trial would have failed it
    confirmation = optuna.load_study(study_name=confirmation_study_name(config.name), storage=config.storage.study_db)
    runs = confirmation.trials
    assert len(runs) == 4 and all(t.state == TrialState.COMPLETE for t in runs)
    top2 = sorted(study.trials, key=lambda t: t.value, reverse=True)[:2]
    assert sorted((t.user_attrs[CONFIRMS], t.params[SEED_PARAM]) for t in runs) == sorted((t.number, s) for t in top2 for s in (1, 2))
    for run in runs:  # the same configuration as the search trial it confirms
        source = study.trials[run.user_attrs[CONFIRMS]]
        assert {k: v for k, v in run.params.items() if k != SEED_PARAM} == source.params

    answer = stored_answer(study)
    means = {t.number: np.mean([r.value for r in runs if r.user_attrs[CONFIRMS] == t.number]) for t in top2}
    assert answer.trial == max(means, key=means.get)
    assert answer.confirmed["mean"] == pytest.approx(means[answer.trial])
    assert answer.search_value == study.trials[answer.trial].value
    assert answer.test["rows"] == 45 and 0 <= answer.test["metrics"]["test_f1_macro"] <= 1
    assert result.answer == answer.to_dict() and result.splits == {"train": 200, "validation": 60, "test": 45}

    client, parents, children = mlflow_runs(config)
    confirm_runs = [r for r in children if r.data.tags.get("hpo.role") == "confirm"]
    assert len(confirm_runs) == 4 and all(r.info.status == "FINISHED" for r in confirm_runs)
    assert {r.data.tags["hpo.training_seed"] for r in confirm_runs} == {"1", "2"}
    assert len([r for r in children if r.data.tags.get("hpo.role") == "search"]) == 3
    parent = parents[0]
    assert parent.data.metrics["test_f1_macro"] == pytest.approx(answer.test["metrics"]["test_f1_macro"])
    assert parent.data.metrics["confirmed_mean_val_f1_macro"] == pytest.approx(answer.confirmed["mean"])
    assert parent.data.tags["hpo.chosen_trial"] == str(answer.trial)
    scored = next(r for r in confirm_runs if r.info.run_id == answer.test["run_id"])
    assert scored.data.tags["hpo.confirms"] == str(answer.trial) and "test_f1_macro" in scored.data.metrics

    inputs = described_inputs(client.get_run(parent.info.run_id).inputs.dataset_inputs)  # what each run was trained and scored on
    assert {split: (d["name"], d["profile"]["num_rows"]) for split, d in inputs.items()} == {
        "train": ("confirmed train", 200), "validation": ("confirmed validation", 60), "test": ("confirmed test", 45)}
    for child in children:
        described = described_inputs(client.get_run(child.info.run_id).inputs.dataset_inputs)
        assert sorted(described) == ["train", "validation"] and all(described[s] == inputs[s] for s in described)  # never the test split

    engine = sa.create_engine(config.storage.study_db)
    with engine.connect() as connection:
        ledger = connection.execute(sa.text("SELECT state, count(*) FROM hpo_trials WHERE study_name = :n GROUP BY state"),
                                    {"n": confirmation_study_name(config.name)}).all()
    engine.dispose()
    assert dict(ledger) == {"COMPLETE": 4}

    shown = subprocess.run([HPO, "best", config.name, "--db", config.storage.study_db], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"trial {answer.trial}: the chosen configuration" in shown.stdout
    for what in ("search score (validation", "confirmed (validation, mean ± std over new seeds)", "test (rows the search never saw): ", "optimism"):
        assert what in shown.stdout
    page = tmp_path / "report.html"
    reported = subprocess.run([HPO, "report", config.name, "--db", config.storage.study_db, "--out", str(page)], capture_output=True, text=True, timeout=120)
    assert reported.returncode == 0, reported.stderr
    text = page.read_text()
    assert f"The answer: trial {answer.trial}" in text and "test (rows the search never saw)" in text and "true \\ predicted" in text


def test_a_confirmation_killed_half_way_resumes_on_the_next_run(write_sweep, tmp_path):
    path = _sweep(write_sweep, tmp_path, "resumed", confirm={"top_k": 2, "seeds": 2}, budget={"n_trials": 2, "max_concurrent": 1})
    config = load_sweep(path)
    command = [HPO, "run", str(path), "--total-trials", "2", "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run(command, capture_output=True, text=True, env={**env, "HPO_KILL_AT": "between-confirmation-runs"},
                            timeout=600, start_new_session=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    confirmation = optuna.load_study(study_name=confirmation_study_name(config.name), storage=config.storage.study_db)
    assert [t.state for t in confirmation.trials].count(TrialState.COMPLETE) == 1

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout)
    assert summary["answer"]["confirmed"] is not None and len(summary["answer"]["confirmed"]["values"]) == 2

    study = optuna.load_study(study_name=config.name, storage=config.storage.study_db)
    assert len(study.trials) == 2  # the search did not run again
    runs = optuna.load_study(study_name=confirmation_study_name(config.name), storage=config.storage.study_db).trials
    assert not [t for t in runs if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    pairs = {(t.user_attrs[CONFIRMS], t.params[SEED_PARAM]) for t in runs if t.state == TrialState.COMPLETE}
    assert pairs == {(t.number, seed) for t in study.trials for seed in (1, 2)}  # every pair confirmed once
    _, _, children = mlflow_runs(config)
    assert not [r for r in children if r.info.status == "RUNNING"]
