"""Bring the study, the ledger and MLflow back in step after an invocation died.

Runs at the start of ``hpo run`` while holding the study's lease, so no live invocation owns
any RUNNING trial: each one was interrupted. It is closed as FAIL (reason ``interrupted``)
in the study, the ledger and MLflow, and its parameters are queued to run again.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from orchestrator.exit_codes import ExitStatus
from orchestrator.mlflow_tags import TAG_PREFIX
from orchestrator.outcome import MLFLOW_STATUS
from orchestrator.storage.ledger import Ledger
from orchestrator.storage.study import requeue
from orchestrator.tracking import MlflowTracker
from orchestrator.trial_attrs import MLFLOW_RUN_ID, STATE_REASON

INTERRUPTED = "interrupted: the hpo run executing this trial stopped (killed or crashed) before it finished"


def reconcile(study: optuna.Study, storage: optuna.storages.BaseStorage, ledger: Ledger, tracker: MlflowTracker) -> list[int]:
    """Close trials and invocations left open by a dead invocation; return the closed trial numbers."""
    study_id = storage.get_study_id_from_name(study.study_name)
    closed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, STATE_REASON, INTERRUPTED)
        study.tell(trial.number, state=TrialState.FAIL)
        requeue(study, trial)
        run_id = trial.user_attrs.get(MLFLOW_RUN_ID)
        if run_id:
            tracker.finish(run_id, MLFLOW_STATUS[TrialState.FAIL], tags={f"{TAG_PREFIX}state": "FAIL", f"{TAG_PREFIX}state_reason": INTERRUPTED})
        ledger.trial_finished(trial.number, "FAIL", INTERRUPTED)
        closed.append(trial.number)
    for invocation in ledger.unfinished_invocations():
        if invocation["mlflow_parent_run_id"]:
            tracker.finish(invocation["mlflow_parent_run_id"], ExitStatus.INTERRUPTED.mlflow_status, tags={f"{TAG_PREFIX}exit_status": ExitStatus.INTERRUPTED})
        ledger.close_invocation(invocation["id"], ExitStatus.INTERRUPTED, "the process stopped without recording an end")
    return closed
