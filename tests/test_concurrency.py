"""Several writers and readers on one study database at the same time."""

from __future__ import annotations

import threading

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from orchestrator.api import load_sweep, run_sweep
from orchestrator.cli import app

pytestmark = pytest.mark.slow


def _run_in_thread(config, results: dict, key: str) -> threading.Thread:
    def target():
        try:
            results[key] = run_sweep(config)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            results[key] = error

    thread = threading.Thread(target=target, name=key)
    thread.start()
    return thread


def test_two_sweeps_at_once_on_one_postgres_database(ray_session, write_sweep, postgres_url):
    configs = [
        load_sweep(write_sweep(name=f"together-{i}", storage={"study_db": postgres_url},
                               budget={"n_trials": 4, "max_concurrent": 1}, trial={"max_epochs": 2}, resources={"cpu": 1}))
        for i in (1, 2)
    ]
    results: dict = {}
    threads = [_run_in_thread(config, results, config.name) for config in configs]
    for thread in threads:
        thread.join(timeout=600)
    for config in configs:
        assert not isinstance(results[config.name], BaseException), results[config.name]
        trials = optuna.load_study(study_name=config.name, storage=postgres_url).trials
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 4


def test_reader_polling_during_a_sqlite_sweep_never_fails(ray_session, write_sweep):
    config = load_sweep(write_sweep(name="watched", budget={"n_trials": 4, "max_concurrent": 2}, trial={"max_epochs": 3}))
    results: dict = {}
    thread = _run_in_thread(config, results, "sweep")
    runner = CliRunner()
    polls = 0
    while thread.is_alive():
        for command in (["trials", "watched"], ["studies"]):
            result = runner.invoke(app, [*command, "--db", config.storage.study_db, "--json"])
            # before the sweep creates the study, "no such study" is a correct answer
            assert result.exit_code == 0 or "no such study" in result.output or "no study database" in result.output, result.output
        polls += 1
    thread.join()
    assert not isinstance(results["sweep"], BaseException), results["sweep"]
    assert polls > 5
    trials = optuna.load_study(study_name="watched", storage=config.storage.study_db).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
