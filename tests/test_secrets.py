"""A database password in the sweep's URL appears in no output, log, MLflow record or file of a sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

PASSWORD = "s3cretPW42"


def test_password_never_leaks(write_sweep, postgres_url, tmp_path, monkeypatch):
    url = sa.engine.make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)  # trust auth ignores it
    monkeypatch.setenv("HPO_TEST_DB_PASSWORD", PASSWORD)
    path = write_sweep(name="secret", budget={"n_trials": 2, "max_concurrent": 2}, trial={"max_epochs": 1},
                       storage={"study_db": url.replace(PASSWORD, "${HPO_TEST_DB_PASSWORD}")})
    hpo = str(Path(sys.executable).parent / "hpo")
    outputs = []
    for command in (["validate", str(path)], ["run", str(path)], ["run", str(path), "--json", "--n-trials", "1"], ["studies", "--db", url], ["trials", "secret", "--db", url]):
        completed = subprocess.run([hpo, *command], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        outputs.append(completed.stdout + completed.stderr)
    assert "***" in outputs[1]  # the URL is shown, masked
    for output in outputs:
        assert PASSWORD not in output

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("secret")
    for run in client.search_runs([experiment.experiment_id]):
        assert PASSWORD not in repr(run.data.params) + repr(run.data.tags)

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        snapshot = connection.execute(sa.text("SELECT config_json FROM hpo_sweeps WHERE name = 'secret'")).scalar()
    engine.dispose()
    assert "***" in snapshot and PASSWORD not in snapshot

    leaks = [str(file) for file in tmp_path.rglob("*") if file.is_file() and PASSWORD.encode() in file.read_bytes()]
    assert not leaks, f"password found in {leaks}"
