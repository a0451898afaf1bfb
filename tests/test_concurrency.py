"""Several writers and readers on one study database at the same time."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

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


def test_two_sweeps_at_once_on_one_postgres_database(write_sweep, postgres_url):
    """Two `hpo run` processes (as two teams' nightly jobs) on one fresh database at the same moment."""
    paths = [
        write_sweep(name=f"together-{i}", storage={"study_db": postgres_url},
                    budget={"n_trials": 3, "max_concurrent": 1}, trial={"max_epochs": 2})
        for i in (1, 2)
    ]
    hpo = str(Path(sys.executable).parent / "hpo")
    processes = [subprocess.Popen([hpo, "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"}) for path in paths]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
    for i in (1, 2):
        trials = optuna.load_study(study_name=f"together-{i}", storage=postgres_url).trials
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 3


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
            assert result.exit_code == 0 or any(early in result.output for early in ("no such study", "no study database", "no studies there yet")), result.output
        polls += 1
    thread.join()
    assert not isinstance(results["sweep"], BaseException), results["sweep"]
    assert polls > 5
    trials = optuna.load_study(study_name="watched", storage=config.storage.study_db).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
