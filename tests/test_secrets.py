"""A database password in the sweep's URL appears in no output, log, MLflow record or file of a sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

PASSWORD = "s3cr/et:Pw#42?ü@x"  # characters a URL password can hold that once defeated the masking
ENCODED = urllib.parse.quote(PASSWORD, safe="")


def test_password_never_leaks(write_sweep, postgres_url, tmp_path, monkeypatch):
    url = sa.engine.make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)  # trust auth ignores it
    assert ENCODED in url
    monkeypatch.setenv("HPO_TEST_DB_PASSWORD", ENCODED)
    path = write_sweep(name="secret", budget={"n_trials": 2, "max_concurrent": 2}, trial={"max_epochs": 1},
                       storage={"study_db": url.replace(ENCODED, "${HPO_TEST_DB_PASSWORD}")})
    hpo = str(Path(sys.executable).parent / "hpo")
    outputs = []
    for command in (["validate", str(path)], ["run", str(path)], ["run", str(path), "--json", "--n-trials", "1"], ["studies", "--db", url], ["trials", "secret", "--db", url],
                    ["best", "secret", "--db", url, "--json"], ["report", "secret", "--db", url, "--out", str(tmp_path / "report.html")]):
        completed = subprocess.run([hpo, *command], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        outputs.append(completed.stdout + completed.stderr)
    assert "***" in outputs[1]  # the URL is shown, masked
    for output in outputs:
        assert PASSWORD not in output and ENCODED not in output

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("secret")
    for run in client.search_runs([experiment.experiment_id]):
        assert ENCODED not in repr(run.data.params) + repr(run.data.tags) and PASSWORD not in repr(run.data.params) + repr(run.data.tags)

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        snapshot = connection.execute(sa.text("SELECT config_json FROM hpo_sweeps WHERE name = 'secret'")).scalar()
    engine.dispose()
    assert "***" in snapshot and PASSWORD not in snapshot and ENCODED not in snapshot

    # Every file the sweep wrote: Ray Tune's, MLflow's artifacts (sweep.json), the HTML report.
    leaks = [str(file) for file in tmp_path.rglob("*") if file.is_file()
             and any(form.encode() in file.read_bytes() for form in (PASSWORD, ENCODED))]
    assert not leaks, f"password found in {leaks}"
