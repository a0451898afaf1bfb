"""Budgets for unattended runs: --total-trials (idempotent), --timeout (PRUNED, reason budget), --json-summary."""

from __future__ import annotations

import json
import time

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from orchestrator.api import RunOptions, load_sweep, run_sweep
from orchestrator.cli import app
from orchestrator.run.budget import parse_duration

runner = CliRunner()


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("45m", 2700), ("6h", 21600), ("1h30m", 5400), ("1.5d", 129600)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "6 hours", "h", "5x", "1h-30m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="write it like 90s, 45m, 6h"):
        parse_duration(text)


@pytest.mark.slow
def test_total_trials_is_idempotent_and_writes_a_summary(ray_session, write_sweep, tmp_path):
    path = write_sweep(name="nightly", trial={"max_epochs": 1})
    summary = tmp_path / "summary.json"
    first = runner.invoke(app, ["run", str(path), "--total-trials", "3", "--json-summary", str(summary)])
    assert first.exit_code == 0, first.output
    report = json.loads(summary.read_text())
    assert report["trials_this_run"] == {"COMPLETE": 3} and report["exit_status"] == "ok"
    assert report["best_before"] is None and report["new_best"] is True and report["best_after"] > 0

    again = runner.invoke(app, ["run", str(path), "--total-trials", "3", "--json-summary", str(summary)])
    assert again.exit_code == 0, again.output
    report = json.loads(summary.read_text())
    assert report["trials_this_run"] == {} and report["new_best"] is False
    assert any("already has 3 finished trials" in note for note in report["notes"])
    assert len(optuna.load_study(study_name="nightly", storage=load_sweep(path).storage.study_db).trials) == 3


@pytest.mark.slow
def test_timeout_prunes_running_trials_and_starts_no_more(ray_session, write_sweep):
    # A deadline long enough for the first trial to start on a busy machine, and a trial far longer than it.
    config = load_sweep(write_sweep(name="timed", trial={"max_epochs": 5000}, budget={"n_trials": 4, "max_concurrent": 1}))
    started = time.monotonic()
    result = run_sweep(config, RunOptions(timeout_s=15))
    assert time.monotonic() - started < 15 + 30  # start-up plus one epoch of grace at most
    assert result.exit_status == "budget"
    trials = optuna.load_study(study_name="timed", storage=config.storage.study_db).trials
    assert len(trials) == 1  # no trial started after the deadline
    assert trials[0].state == TrialState.PRUNED and trials[0].intermediate_values
    assert trials[0].user_attrs["state_reason"].startswith("budget")


@pytest.mark.slow
def test_a_budget_spent_before_any_trial_exits_4(ray_session, write_sweep, tmp_path):
    path = write_sweep(name="no-time", trial={"max_epochs": 1})
    summary = tmp_path / "summary.json"
    result = runner.invoke(app, ["run", str(path), "--timeout", "0.001", "--json-summary", str(summary)])
    assert result.exit_code == 4, result.output
    assert "budget was spent before any trial started" in result.output
    report = json.loads(summary.read_text())
    assert report["exit_status"] == "budget" and report["trials_this_run"] == {}
    assert optuna.load_study(study_name="no-time", storage=load_sweep(path).storage.study_db).trials == []
