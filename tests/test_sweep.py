"""Real sweeps of a tiny BERT through local Ray, a real study DB (SQLite and PostgreSQL) and a real MLflow store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.api import load_sweep, run_sweep
from orchestrator.errors import SweepFailedError
from tests.conftest import TINY_SPACE, free_port, mlflow_runs

pytestmark = pytest.mark.slow

EPOCH_METRICS = {"val_loss", "val_accuracy", "val_precision_macro", "val_recall_macro", "val_f1_macro", "train_loss", "samples_per_s"}


def _study(config) -> optuna.Study:
    return optuna.load_study(study_name=config.name, storage=config.storage.study_db)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sweep_records_trials_in_study_and_mlflow(ray_session, write_sweep, backend, request):
    overrides = {}
    if backend == "postgresql":
        overrides["storage"] = {"study_db": request.getfixturevalue("postgres_url")}
    config = load_sweep(write_sweep(name=f"tiny-{backend}", **overrides))

    result = run_sweep(config)

    trials = _study(config).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for trial in trials:
        assert 2e-3 <= trial.params["learning_rate"] <= 1e-2
        assert trial.params["batch_size"] in (8, 16)
        assert 1 <= trial.params["unfreeze_depth"] <= 2
        assert 0.0 <= trial.params["dropout"] <= 0.2
        assert 0.0 <= trial.value <= 1.0
        assert sorted(trial.intermediate_values) == [1, 2, 3]
        assert trial.value == max(trial.intermediate_values.values())
    assert result.study_trials == {"COMPLETE": 4} and result.trials_this_run == {"COMPLETE": 4}
    assert result.best.value == max(t.value for t in trials)
    assert result.best.value > result.baseline["val_f1_macro"] + 0.1  # the tiny model does learn the toy task

    client, parents, children = mlflow_runs(config)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_id == result.parent_run_id
    by_number = {int(run.data.tags["hpo.optuna_trial_number"]): run for run in children}
    assert sorted(by_number) == [t.number for t in trials]
    for trial in trials:
        run = by_number[trial.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["hpo.state"] == "COMPLETE"
        assert run.data.tags["hpo.ray_trial_id"] == trial.user_attrs["ray_trial_id"]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert float(run.data.params["learning_rate"]) == pytest.approx(trial.params["learning_rate"])
        assert run.data.params["weight_decay"] == "0.01"  # fixed values are logged too
        assert EPOCH_METRICS <= set(run.data.metrics)
        history = client.get_metric_history(run.info.run_id, "val_f1_macro")
        assert [m.step for m in history] == [1, 2, 3]
        assert run.info.run_name == f"t{trial.number:03d} lr={trial.params['learning_rate']:.3g} bs={trial.params['batch_size']} unfreeze={trial.params['unfreeze_depth']} dropout={trial.params['dropout']:.3g}"
        assert {f"val_f1_class.{name}" for name in ("negative", "neutral", "positive")} <= set(run.data.metrics)

    # The parent run tells the sweep's story: its settings, and progress as trials finished.
    assert parent.data.tags["hpo.sampler"] == "tpe" and parent.data.tags["hpo.scheduler"] == "fifo"
    assert parent.data.tags["hpo.objective"] == "max val_f1_macro" and "hpo.code_version" in parent.data.tags
    artifacts = {artifact.path for artifact in client.list_artifacts(parent.info.run_id)}
    assert {"sweep.json", "search_space.yaml"} <= artifacts
    best_so_far = client.get_metric_history(parent.info.run_id, "best_val_f1_macro")
    assert sorted({m.step for m in best_so_far}) == [1, 2, 3, 4]
    values = [m.value for m in sorted(best_so_far, key=lambda m: (m.step, m.timestamp))]
    assert values == sorted(values) and values[-1] == pytest.approx(result.best.value)
    assert parent.data.metrics["trials_complete"] == 4 and parent.data.metrics["trials_fail"] == 0

    # Without confirmation the answer is the search's best, scored once on the 100 drawn test rows.
    assert result.answer["trial"] == result.best.number and result.answer["confirmed"] is None
    assert result.answer["test"]["rows"] == 100 and result.answer["test"]["run_id"] == by_number[result.best.number].info.run_id
    assert parent.data.metrics["test_f1_macro"] == pytest.approx(result.answer["test"]["metrics"]["test_f1_macro"])


def test_running_the_same_file_twice_continues_one_study(ray_session, write_sweep):
    path = write_sweep(name="twice", budget={"n_trials": 3, "max_concurrent": 2}, trial={"max_epochs": 1})
    config = load_sweep(path)
    run_sweep(config)
    second = run_sweep(load_sweep(path))

    summaries = optuna.get_all_study_summaries(config.storage.study_db)
    assert [s.study_name for s in summaries] == ["twice"]
    trials = _study(config).trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert [t.number for t in trials] == list(range(6))
    assert second.trials_this_run == {"COMPLETE": 3} and second.study_trials == {"COMPLETE": 6}
    _, parents, children = mlflow_runs(config)
    assert len(parents) == 2 and len(children) == 6


def test_early_stopped_trials_are_pruned_with_their_intermediate_values(ray_session, write_sweep):
    config = load_sweep(write_sweep(
        name="asha",
        trial={"max_epochs": 4},
        budget={"n_trials": 6, "max_concurrent": 1},
        scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 3},
    ))
    run_sweep(config)
    trials = _study(config).trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == 6
    for trial in pruned:
        assert 1 <= len(trial.intermediate_values) < 4
        last_epoch = max(trial.intermediate_values)
        assert trial.value == trial.intermediate_values[last_epoch]  # Optuna keeps a pruned trial's last value
    _, _, children = mlflow_runs(config)
    statuses = {int(r.data.tags["hpo.optuna_trial_number"]): (r.info.status, r.data.tags["hpo.state"]) for r in children}
    assert all(statuses[t.number] == ("KILLED", "PRUNED") for t in pruned)
    assert all(statuses[t.number] == ("FINISHED", "COMPLETE") for t in complete)


def test_crashing_trials_fail_with_their_reason(ray_session, write_sweep):
    space = {**TINY_SPACE, "learning_rate": 1.0e30, "max_grad_norm": 0.0,
             "dropout": {"type": "float", "low": 0.0, "high": 0.1}}
    config = load_sweep(write_sweep(name="diverges", search_space=space, budget={"n_trials": 2, "max_concurrent": 2}))
    with pytest.raises(SweepFailedError, match="all 2 trials failed; first reason: NonFiniteLossError"):
        run_sweep(config)
    trials = _study(config).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    assert all("training loss became" in t.user_attrs["state_reason"] for t in trials)
    _, parents, children = mlflow_runs(config)
    assert [r.info.status for r in children] == ["FAILED", "FAILED"]
    assert all(r.data.tags["hpo.state"] == "FAIL" for r in children)
    # exit 1: neither the ledger nor the MLflow parent run says ok
    assert [(r.info.status, r.data.tags["hpo.exit_status"]) for r in parents] == [("FAILED", "failed")]
    [(status, reason)] = _invocations(config)
    assert status == "failed" and reason.startswith("all 2 trials failed; first reason: NonFiniteLossError")


def test_an_invocation_that_raises_is_recorded_as_failed(ray_session, write_sweep, monkeypatch):
    config = load_sweep(write_sweep(name="breaks", budget={"n_trials": 1, "max_concurrent": 1}))

    def broken_searcher(*args, **kwargs):
        raise RuntimeError("the searcher broke")

    monkeypatch.setattr("orchestrator.search.searcher.StudySearcher", broken_searcher)  # after the parent run is started
    with pytest.raises(RuntimeError, match="the searcher broke"):
        run_sweep(config)
    assert _invocations(config) == [("failed", "RuntimeError: the searcher broke")]
    _, parents, _ = mlflow_runs(config)
    assert [(r.info.status, r.data.tags["hpo.exit_status"]) for r in parents] == [("FAILED", "failed")]


def _invocations(config) -> list[tuple]:
    import sqlalchemy as sa

    engine = sa.create_engine(config.storage.study_db)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT exit_status, reason FROM hpo_invocations ORDER BY started_at")).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def test_optuna_cli_and_dashboard_read_our_study_db(ray_session, write_sweep):
    config = load_sweep(write_sweep(name="cli-read", budget={"n_trials": 2, "max_concurrent": 2}, trial={"max_epochs": 1}))
    run_sweep(config)
    optuna_cli = [sys.executable, "-c", "from optuna.cli import main; main()"]
    output = subprocess.run(
        [*optuna_cli, "trials", "--study-name", "cli-read", "--storage", config.storage.study_db, "-f", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert output.count('"COMPLETE"') == 2
    best = subprocess.run(
        [*optuna_cli, "best-trial", "--study-name", "cli-read", "--storage", config.storage.study_db, "-f", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "learning_rate" in best

    _check_dashboard_lists(config.storage.study_db, "cli-read", expected_trials=2)


def _check_dashboard_lists(study_db: str, study_name: str, expected_trials: int) -> None:
    """optuna-dashboard, started the way the README says, serves the study and its trials."""
    import json
    import time
    import urllib.request

    port = free_port()
    dashboard = subprocess.Popen(
        [str(Path(sys.executable).with_name("optuna-dashboard")), study_db, "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.load(response)["study_summaries"]
                break
            except OSError:
                if time.monotonic() > deadline or dashboard.poll() is not None:
                    raise AssertionError(f"optuna-dashboard did not serve: {dashboard.stderr.read1().decode() if dashboard.poll() is not None else 'timeout'}") from None
                time.sleep(0.5)
        study = next(s for s in studies if s["study_name"] == study_name)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=10) as response:
            detail = json.load(response)
        assert len(detail["trials"]) == expected_trials
        assert all(trial["state"] == "Complete" for trial in detail["trials"])
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)
