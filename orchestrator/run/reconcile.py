"""Bring the study, the ledger and MLflow back in step after an invocation died.

Runs at the start of ``hpo run`` while holding the study's lease, so no live invocation owns
any RUNNING trial: each one was interrupted. It is closed as FAIL (reason ``interrupted``)
in the study, the ledger and MLflow, and its parameters are queued to run again. Its end in all
three is the last time it was heard of (its last reported result; its start for a trial killed
before it began), not the time this later invocation closed it.
"""

from __future__ import annotations

from datetime import datetime

import optuna
import sqlalchemy
from optuna.trial import TrialState

from orchestrator.exit_codes import ExitStatus
from orchestrator.run.outcome import MLFLOW_STATUS
from orchestrator.storage.ledger import Ledger
from orchestrator.storage.study import requeue
from orchestrator.storage.trial_attrs import MLFLOW_RUN_ID, STATE_REASON
from orchestrator.tracking import mlflow_tags
from orchestrator.tracking.tracker import MlflowTracker

INTERRUPTED = "interrupted: the hpo run executing this trial stopped (killed or crashed) before it finished"


def reconcile(study: optuna.Study, storage: optuna.storages.BaseStorage, ledger: Ledger, tracker: MlflowTracker) -> list[int]:
    """Close trials and invocations left open by a dead invocation; return the closed trial numbers."""
    study_id = storage.get_study_id_from_name(study.study_name)
    closed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, STATE_REASON, INTERRUPTED)
        run_id = trial.user_attrs.get(MLFLOW_RUN_ID)
        ended = last_heard_of(trial, tracker)
        study.tell(trial.number, state=TrialState.FAIL)
        _set_complete_time(storage, trial_id, ended)
        requeue(study, trial)
        if run_id:
            tracker.finish(run_id, MLFLOW_STATUS[TrialState.FAIL], tags={mlflow_tags.STATE: "FAIL", mlflow_tags.STATE_REASON: INTERRUPTED},
                           ended_ms=int(ended.timestamp() * 1000))
        ledger.trial_finished(trial.number, "FAIL", INTERRUPTED, ended_at=ended)
        closed.append(trial.number)
    for invocation in ledger.unfinished_invocations():
        if invocation["mlflow_parent_run_id"]:
            tracker.finish(invocation["mlflow_parent_run_id"], ExitStatus.INTERRUPTED.mlflow_status, tags={mlflow_tags.EXIT_STATUS: ExitStatus.INTERRUPTED})
        ledger.close_invocation(invocation["id"], ExitStatus.INTERRUPTED, "the process stopped without recording an end")
    return closed


def last_heard_of(trial: optuna.trial.FrozenTrial, tracker: MlflowTracker) -> datetime:
    """When an interrupted trial was last known to run (timezone-aware): the time of its last result on
    its MLflow run, else the run's start; a trial killed before it began (no run) ran for no time."""
    started = trial.datetime_start or datetime.now()
    times = [started.astimezone()]  # Optuna's times are naive local times
    run_id = trial.user_attrs.get(MLFLOW_RUN_ID)
    if run_id:
        run = tracker.client.get_run(run_id)
        times.append(datetime.fromtimestamp(run.info.start_time / 1000).astimezone())
        for key in sorted(run.data.metrics)[:1]:  # a result logs all its metrics at once
            times += [datetime.fromtimestamp(metric.timestamp / 1000).astimezone() for metric in tracker.client.get_metric_history(run_id, key)]
    return max(times)


def _set_complete_time(storage: optuna.storages.BaseStorage, trial_id: int, ended: datetime) -> None:
    """Optuna stamps a finished trial with the time it is told; an interrupted one ended earlier."""
    engine = getattr(storage, "engine", None)
    if engine is None:  # not a SQL storage: keep Optuna's stamp
        return
    with engine.begin() as connection:
        update = sqlalchemy.text("UPDATE trials SET datetime_complete = :ended WHERE trial_id = :trial_id")
        connection.execute(update.bindparams(sqlalchemy.bindparam("ended", type_=sqlalchemy.DateTime)),
                           {"ended": ended.astimezone().replace(tzinfo=None), "trial_id": trial_id})
