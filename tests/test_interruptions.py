"""Killing `hpo run` (SIGKILL, SIGTERM) and running it again: nothing stays RUNNING, nothing is lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from optuna.trial import TrialState

from orchestrator.api import load_sweep

pytestmark = pytest.mark.slow

HPO = str(Path(sys.executable).parent / "hpo")


def _slow_sweep(write_sweep, name, epochs=30):
    # ~30 epochs of the whole tiny model: several seconds per trial, long enough to be killed mid-trial
    # and for a second invocation to find the first still running (from the frozen-layer cache an epoch takes a blink)
    return write_sweep(name=name, trial={"max_epochs": epochs, "cache_frozen": "off"}, budget={"n_trials": 2, "max_concurrent": 1})


def _start(path) -> subprocess.Popen:
    return subprocess.Popen([HPO, "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)


def _wait_for_running_trial(config, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            trials = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
            if any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials):
                return
        except (KeyError, sa.exc.OperationalError):
            pass
        time.sleep(0.3)
    raise AssertionError("no trial started")


def _assert_nothing_running(config):
    trials = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    client = MlflowClient(config.storage.mlflow)
    experiment = client.get_experiment_by_name(config.name)
    runs = client.search_runs([experiment.experiment_id])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    engine = sa.create_engine(config.storage.study_db)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM hpo_trials WHERE state = 'RUNNING'")).scalar() == 0
        assert connection.execute(sa.text("SELECT count(*) FROM hpo_invocations WHERE ended_at IS NULL")).scalar() == 0
        assert connection.execute(sa.text("SELECT count(*) FROM hpo_leases")).scalar() == 0
    engine.dispose()
    return trials, runs


def test_sigkill_mid_trial_then_rerun_closes_and_requeues(write_sweep):
    # killed at once after its first epoch: 10 epochs leave it mid-trial, and the rerun trains both trials in full
    path = _slow_sweep(write_sweep, "killed", epochs=10)
    config = load_sweep(path)
    process = _start(path)
    _wait_for_running_trial(config, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    rerun = subprocess.run([HPO, "run", str(path), "--json", "--n-trials", "2"],
                           capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "left RUNNING by an earlier invocation" in rerun.stdout

    trials, runs = _assert_nothing_running(config)
    killed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(killed) == 1 and killed[0].user_attrs["state_reason"].startswith("interrupted")
    retry = [t for t in trials if t.user_attrs.get("retry_of") == killed[0].number]
    assert len(retry) == 1 and retry[0].params == killed[0].params and retry[0].state == TrialState.COMPLETE
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2
    statuses = {r.data.tags.get("hpo.optuna_trial_number"): r.info.status for r in runs}
    assert statuses[str(killed[0].number)] == "FAILED"
    assert sorted(r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags) == ["FINISHED", "KILLED"]


def test_sigterm_stops_gracefully_with_exit_130(write_sweep):
    path = _slow_sweep(write_sweep, "terminated")
    config = load_sweep(path)
    process = _start(path)
    _wait_for_running_trial(config, process)
    process.send_signal(signal.SIGTERM)  # as Kubernetes or a scheduler stops the main process
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]

    trials, runs = _assert_nothing_running(config)
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped and all("SIGTERM" in t.user_attrs["state_reason"] for t in stopped)
    assert any(t.state == TrialState.WAITING for t in trials)  # its parameters are queued for the next run
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parent] == ["KILLED"]


def test_second_invocation_on_a_busy_study_exits_3(write_sweep):
    path = _slow_sweep(write_sweep, "busy", epochs=300)  # the first is still training when the second has answered
    config = load_sweep(path)
    first = _start(path)
    try:
        _wait_for_running_trial(config, first)
        second = subprocess.run([HPO, "run", str(path)], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
        assert second.returncode == 3, second.stderr[-2000:]
        assert "being run by another hpo invocation" in second.stderr
        started = time.monotonic()
        os.killpg(first.pid, signal.SIGTERM)  # the whole process group, as systemd stops a service: Ray's own processes too
        _, stderr = first.communicate(timeout=120)
        assert first.returncode == 130, stderr[-2000:]  # a graceful stop: Ray's GCS and raylet ignored the group's SIGTERM
        assert time.monotonic() - started < 40
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.communicate()


@pytest.mark.parametrize("point", ["before-first-trial", "between-trials", "mlflow-summary"])
def test_killed_at_any_point_the_same_command_finishes_the_study(write_sweep, point):
    """SIGKILL at each named point of a run (orchestrator/progress/failpoints.py), then the nightly command
    again: all three stores agree, nothing is RUNNING, and the study has exactly the trials asked for.
    (Two one-epoch trials: the fewest with a point between trials; the work is the two invocations.)"""
    path = write_sweep(name=f"kill-{point}", trial={"max_epochs": 1}, budget={"n_trials": 2, "max_concurrent": 1})
    config = load_sweep(path)
    command = [HPO, "run", str(path), "--total-trials", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run(command, capture_output=True, text=True, env={**env, "HPO_KILL_AT": point}, timeout=600, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    again = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]

    trials, runs = _assert_nothing_running(config)
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2
    assert all(t.state in (TrialState.COMPLETE, TrialState.WAITING) for t in trials)  # no trial was in flight when killed
    children = {int(r.data.tags["hpo.optuna_trial_number"]): r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert {n: r.info.status for n, r in children.items()} == {t.number: "FINISHED" for t in trials if t.state == TrialState.COMPLETE}
    parents = sorted(r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags)
    if point == "mlflow-summary":
        assert parents == ["KILLED"]  # the rerun found the study complete and started no parent run
    else:
        assert parents == ["FINISHED", "KILLED"]


# The boundaries of a sweep's answer, in the order a run reaches them (orchestrator/progress/failpoints.py).
ANSWER_BOUNDARIES = ("before-confirmation", "between-confirmation-runs", "before-test-score", "before-registration",
                     "after-registration", "before-summary", "mlflow-summary")
# Two fixed points: every invocation's search runs the same trials, whatever its sampler proposes.
ANSWER_POINTS = [{"learning_rate": 0.002, "batch_size": 8, "unfreeze_depth": 1, "dropout": 0.0},
                 {"learning_rate": 0.008, "batch_size": 16, "unfreeze_depth": 2, "dropout": 0.1}]


def _answer_sweep(write_sweep, name):
    """Two one-epoch search trials, the better confirmed with two seeds, one at a time (no run in flight at any boundary),
    scored on a test split and registered."""
    return write_sweep(name=name, trial={"max_epochs": 1}, budget={"n_trials": 2, "max_concurrent": 1},
                       data={"train_size": 200, "val_size": 60, "test_size": 40}, seed_trials=ANSWER_POINTS,
                       confirm={"top_k": 1, "seeds": 2}, registered_model=f"{name}-model")


def _kill_groups(groups: list[int]) -> None:
    """Kill what a driver-only kill left running (Ray's processes, in the killed run's process group)."""
    while groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(groups.pop(), signal.SIGKILL)


def _settled_answer(config):
    """The answer as the study, the registry and MLflow hold it after a sweep has ended."""
    from orchestrator.answer.confirm import confirmation_study_name
    from orchestrator.answer.settle import stored_answer
    from orchestrator.tracking.mlflow_tags import SOURCE_RUN_ID

    trials, runs = _assert_nothing_running(config)
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE"]  # exactly the trials asked for
    confirmation = optuna.load_study(study_name=confirmation_study_name(config.name), storage=config.storage.study_db)
    assert [t.state for t in confirmation.trials].count(TrialState.COMPLETE) == 2
    assert not [t for t in confirmation.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    study = optuna.load_study(study_name=config.name, storage=config.storage.study_db)
    answer = stored_answer(study)
    assert answer is not None and answer.confirmed is not None and answer.test is not None, answer
    client = MlflowClient(config.storage.mlflow)
    versions = client.search_model_versions(f"name='{config.registered_model}'")
    assert [f"{config.registered_model}/{v.version}" for v in versions] == [answer.registered]  # registered once
    assert versions[0].tags[SOURCE_RUN_ID] == answer.test["run_id"]  # the model that was scored
    # some invocation's parent run holds every score of the answer, its registered model and the study's summary
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("hpo.chosen_trial") == str(answer.trial)]
    assert any(r.data.metrics.get("test_f1_macro") == pytest.approx(answer.test["metrics"]["test_f1_macro"])
               and r.data.metrics.get("confirmed_mean_val_f1_macro") == pytest.approx(answer.confirmed["mean"])
               and r.data.tags.get("hpo.registered_model") == answer.registered
               and "summary" in {artifact.path for artifact in client.list_artifacts(r.info.run_id)} for r in parents), parents
    return {"params": study.trials[answer.trial].params, "search": answer.search_value, "confirmed": answer.confirmed["values"],
            "test": answer.test["metrics"], "rows": answer.test["rows"]}


def test_a_kill_at_any_boundary_of_the_answer_loses_nothing(write_sweep):
    """One study is killed (SIGKILL) at every boundary after its search in turn, each invocation getting
    one boundary further than the one before (so each resumes what the kill left, up to the next), its
    whole process group and its driver alone by turns: then a plain run settles the answer an
    uninterrupted sweep gives, registered once. (One chain of runs, not a pair per boundary: each
    run costs seconds of start-up.)"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    uninterrupted = _answer_sweep(write_sweep, "uninterrupted")
    done = subprocess.run([HPO, "run", str(uninterrupted), "--total-trials", "2"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = _settled_answer(load_sweep(uninterrupted))

    path = _answer_sweep(write_sweep, "killed")
    config = load_sweep(path)
    command = [HPO, "run", str(path), "--total-trials", "2"]
    groups = []
    try:
        for position, point in enumerate(ANSWER_BOUNDARIES):
            # driver only: hpo is not its process group's leader, so the failpoint kills it alone and Ray's processes live on
            wrapped = ["bash", "-c", '"$@"; exit $?', "bash", *command] if position % 2 else command
            killed = subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, "HPO_KILL_AT": point},
                                      start_new_session=True)
            stdout, stderr = killed.communicate(timeout=600)
            _kill_groups(groups)  # the run before this one's leftovers: one at a time beside a run
            groups.append(killed.pid)
            assert killed.returncode == (128 + signal.SIGKILL if position % 2 else -signal.SIGKILL), (point, stdout[-2000:], stderr[-2000:])

        again = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env, timeout=600)
    finally:
        _kill_groups(groups)
    assert again.returncode == 0, again.stderr[-2000:]
    answer = _settled_answer(config)
    assert json.loads(again.stdout)["answer"]["registered"] == f"{config.registered_model}/1"
    assert answer["params"] == expected["params"] and answer["rows"] == expected["rows"]
    for key in ("search", "confirmed"):
        assert answer[key] == pytest.approx(expected[key])
    assert answer["test"] == pytest.approx(expected["test"])



@pytest.mark.parametrize("point", ["before-registration", "mlflow-summary"])
def test_a_sigterm_while_the_answer_is_settled_finishes_it_then_ends_interrupted(ray_session, write_sweep, monkeypatch, point):
    """The first signal after the trials (a scheduler's timeout, `kill PID`) lets the answer be settled:
    scored, registered, summarised; the invocation then ends interrupted (exit 130), in the ledger and
    on its MLflow parent run alike."""
    from orchestrator.api import run_sweep
    from orchestrator.exit_codes import ExitStatus

    config = load_sweep(_answer_sweep(write_sweep, f"term-{point}"))
    monkeypatch.setenv("HPO_KILL_AT", point)
    monkeypatch.setenv("HPO_KILL_SIGNAL", "SIGTERM")
    result = run_sweep(config)

    assert result.exit_status == ExitStatus.INTERRUPTED
    answer = _settled_answer(config)
    assert answer["test"] and result.answer["registered"] == f"{config.registered_model}/1"
    [parent] = [r for r in _assert_nothing_running(config)[1] if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED" and parent.data.tags["hpo.exit_status"] == "interrupted"
    engine = sa.create_engine(config.storage.study_db)
    with engine.connect() as connection:
        status, reason = connection.execute(sa.text("SELECT exit_status, reason FROM hpo_invocations WHERE id = :id"), {"id": result.invocation_id}).one()
    engine.dispose()
    assert (status, reason) == ("interrupted", "stopped by SIGTERM once the answer was settled")

def test_a_trial_closed_after_its_invocation_died_ends_when_it_was_last_heard_of(write_sweep, tmp_path):
    """Not when the next invocation closed it: a trial killed before it began ran for no time, one killed
    later ran until its last result; the study, the ledger and its MLflow run say the same."""
    from orchestrator.run.reconcile import reconcile
    from orchestrator.storage import db
    from orchestrator.storage.ledger import Ledger
    from orchestrator.storage.study import open_storage
    from orchestrator.storage.trial_attrs import MLFLOW_RUN_ID
    from orchestrator.tracking.tracker import MlflowTracker

    config = load_sweep(write_sweep(name="died"))
    engine = db.create_engine(config.storage.study_db)
    db.upgrade(engine)
    storage = open_storage(config.storage.study_db)
    study = optuna.create_study(study_name=config.name, storage=storage, direction="maximize")
    tracker = MlflowTracker(config.storage.mlflow, config.name, tmp_path / "mlartifacts")
    dead = Ledger(engine, config.name)
    dead.start_invocation(config)
    never_began = study.ask()  # asked by the searcher; the invocation died before Ray started it
    began = study.ask()
    run_id = tracker.start_run("began", params={}, tags={})
    began.set_user_attr(MLFLOW_RUN_ID, run_id)
    dead.trial_started(began._trial_id, began.number, "ray-trial", run_id, cpu=1, gpu=0, checkpoint_path=None)
    tracker.log_metrics(run_id, {"val_f1_macro": 0.5}, step=1)
    last_result = time.time()
    time.sleep(2)  # the invocation is dead; the next one comes later

    closed = reconcile(study, storage, Ledger(engine, config.name), tracker)

    assert closed == [never_began.number, began.number]
    trials = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
    assert trials[never_began.number].duration.total_seconds() == pytest.approx(0, abs=0.2)
    assert trials[began.number].datetime_complete.timestamp() == pytest.approx(last_result, abs=0.5)
    assert MlflowClient(config.storage.mlflow).get_run(run_id).info.end_time / 1000 == pytest.approx(last_result, abs=0.5)
    with engine.connect() as connection:
        ended = connection.execute(sa.text("SELECT ended_at FROM hpo_trials WHERE optuna_trial_number = :n"), {"n": began.number}).scalar()
    engine.dispose()
    ended = datetime.fromisoformat(str(ended)).replace(tzinfo=timezone.utc)  # the ledger keeps UTC
    assert ended.timestamp() == pytest.approx(last_result, abs=0.5)
