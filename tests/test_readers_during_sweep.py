"""Readers never disturb a writer: whatever reads a SQLite study (or MLflow) database while a sweep
writes it (the inspection commands, `optuna trials`, a notebook's sqlite3, MLflow's client), the
sweep's write-ahead log stays in place, every reader sees what was committed, and nothing is lost.

SQLite's write-ahead log is deleted by the last connection to close. A process that opens and
closes a database file other than through SQLite drops every POSIX lock it holds on it, SQLite's
own included, so another process's reader then believes it is the last one and deletes the log
the sweep is still writing (SQLite's "How To Corrupt An SQLite Database File", section 2.2).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from orchestrator.storage.db.schema_lock import schema_lock
from orchestrator.storage.study import open_storage

BIN = Path(sys.executable).parent
COUNT_COMPLETE = "SELECT count(*) FROM trials WHERE state = 'COMPLETE'"


def _read_in_another_process(database: Path, query: str = COUNT_COMPLETE) -> int:
    """Open, read and close the database in a new process, as a notebook or a dashboard does."""
    code = f"import sqlite3; c = sqlite3.connect({str(database)!r}); print(c.execute({query!r}).fetchone()[0]); c.close()"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def _wal_inode(database: Path) -> int | None:
    try:
        return Path(f"{database}-wal").stat().st_ino
    except FileNotFoundError:
        return None


def test_the_schema_lock_leaves_sqlite_s_own_locks_alone(tmp_path):
    """A writer that takes the schema lock (as `hpo run` does, around migrations) keeps its hold on
    the database: a reader in another process closing its connection does not delete the log."""
    database = tmp_path / "study.db"
    url = f"sqlite:///{database}"
    study = optuna.create_study(study_name="written", storage=open_storage(url))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    inode = _wal_inode(database)
    assert inode is not None

    with schema_lock(url):
        pass
    assert _read_in_another_process(database) == 1
    assert _wal_inode(database) == inode, "a reader deleted the running writer's write-ahead log"

    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=2.0))
    assert _read_in_another_process(database) == 2, "the writer's commit went into a deleted log"


TRAIN = '''
import time
from trials import report

def main(config):
    for epoch in range(1, 3):
        time.sleep(0.4)
        report.epoch({"score": -(config["x"] - 0.3) ** 2 - (2 - epoch)})
'''


def _inspections(study: str, db_url: str, mlflow_url: str, out: Path) -> dict[str, list[str]]:
    """Every read-only command a user points at a study while it runs."""
    hpo = str(BIN / "hpo")
    csv = out / "labelled.csv"
    csv.write_text("text,label\nhello,a\n")
    return {
        "hpo studies": [hpo, "studies", "--db", db_url, "--json"],
        "hpo trials": [hpo, "trials", study, "--db", db_url, "--json"],
        "hpo best": [hpo, "best", study, "--db", db_url, "--json"],
        "hpo export": [hpo, "export", study, "--db", db_url, "--out", str(out / "trials.csv")],
        "hpo report": [hpo, "report", study, "--db", db_url, "--out", str(out / "report.html")],
        "hpo evaluate": [hpo, "evaluate", study, "--db", db_url, "--mlflow", mlflow_url, "--data", str(csv)],
        "optuna trials": [str(BIN / "optuna"), "trials", "--study-name", study, "--storage", db_url, "-f", "json"],
        "mlflow client": [sys.executable, "-c", textwrap.dedent(f"""
            from mlflow import MlflowClient
            client = MlflowClient({mlflow_url!r})
            experiment = client.get_experiment_by_name({study!r})
            print(len(client.search_runs([experiment.experiment_id])) if experiment else 0)
        """)],
    }


@pytest.mark.slow
def test_every_reader_during_a_sweep_sees_it_and_loses_nothing(tmp_path):
    """`hpo run` sweeps a SQLite study while every inspection command, `optuna trials`, sqlite3 and
    MLflow's client read it in other processes, round after round. The write-ahead logs of the
    study and MLflow databases keep their inodes, each reader sees at least the trials committed
    before it started, and a reader still holding the database when the sweep ends loses nothing."""
    n_trials = 4
    (tmp_path / "train.py").write_text(TRAIN)
    study_db, mlflow_db = tmp_path / "study.db", tmp_path / "mlruns.db"
    db_url, mlflow_url = f"sqlite:///{study_db}", f"sqlite:///{mlflow_db}"
    sweep = {
        "name": "watched", "objective": {"metric": "score", "mode": "max"},
        "trial": {"function": "train.py:main", "max_epochs": 2},
        "search_space": {"x": {"type": "float", "low": -2.0, "high": 2.0}},
        "budget": {"n_trials": n_trials, "max_concurrent": 1},
        "sampler": {"name": "random", "seed": 0},
        "storage": {"study_db": db_url, "mlflow": mlflow_url, "results_dir": str(tmp_path / "runs")},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    out = tmp_path / "out"
    out.mkdir()
    commands = _inspections("watched", db_url, mlflow_url, out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    sweep_process = subprocess.Popen([str(BIN / "hpo"), "run", str(tmp_path / "sweep.yaml")], cwd=tmp_path, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    inodes: dict[Path, int] = {}
    failures: list[str] = []
    held: sqlite3.Connection | None = None
    rounds = 0
    try:
        while sweep_process.poll() is None:
            if _wal_inode(study_db) is None:
                time.sleep(0.2)
                continue
            for name, command in commands.items():
                for database in (study_db, mlflow_db):
                    inode = _wal_inode(database)
                    if inode is not None and inodes.setdefault(database, inode) != inode and sweep_process.poll() is None:
                        failures.append(f"{database.name}'s write-ahead log was replaced while the sweep ran (before {name})")
                committed = _read_in_another_process(study_db)
                reader = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
                if name == "hpo trials" and reader.returncode == 0:
                    seen = sum(row["state"] == "COMPLETE" for row in json.loads(reader.stdout))
                    if seen < committed:
                        failures.append(f"hpo trials saw {seen} COMPLETE trials after {committed} were committed")
                if reader.returncode not in (0, 2) or "Traceback" in reader.stderr:
                    failures.append(f"{name} failed ({reader.returncode}): {reader.stderr[-500:]}")
            if held is None:
                held = sqlite3.connect(study_db)  # a notebook that stays open past the sweep's end
                held.execute(COUNT_COMPLETE).fetchone()
            rounds += 1
        output = sweep_process.stdout.read() if sweep_process.stdout else ""
    finally:
        if sweep_process.poll() is None:
            sweep_process.kill()
    assert sweep_process.returncode == 0, output[-3000:]
    assert held is not None and rounds >= 1, "the sweep ended before any reader ran"
    held.execute(COUNT_COMPLETE).fetchone()
    held.close()  # the last connection: SQLite checkpoints the log into the database here
    assert not failures, failures
    trials = optuna.load_study(study_name="watched", storage=db_url).trials
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * n_trials
    assert _read_in_another_process(study_db) == n_trials
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_url)
    runs = client.search_runs([client.get_experiment_by_name("watched").experiment_id])
    assert sorted(run.info.status for run in runs) == ["FINISHED"] * (n_trials + 1)


