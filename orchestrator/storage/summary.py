"""A study at a glance: its trials counted by state, the best trial and the top ones (ranked by
:mod:`orchestrator.storage.ranking`), each as a plain :class:`TrialSummary`. What an invocation
returns and the MLflow experiment's description both read it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from orchestrator.storage.ranking import primary_value, rank
from orchestrator.storage.trial_attrs import MLFLOW_RUN_ID, STATE_REASON


@dataclass(frozen=True)
class TrialSummary:
    number: int
    state: str
    value: float | None  # the primary objective
    params: dict
    duration_s: float | None
    mlflow_run_id: str | None
    reason: str | None
    values: list[float] | None = None  # every objective, primary first

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial) -> TrialSummary:
        duration = trial.duration.total_seconds() if trial.duration else None
        return cls(
            trial.number, trial.state.name, primary_value(trial), dict(trial.params), duration,
            trial.user_attrs.get(MLFLOW_RUN_ID), trial.user_attrs.get(STATE_REASON),
            list(trial.values) if trial.values else None,
        )


def summarize_study(study: optuna.Study, top_k: int = 5) -> tuple[dict[str, int], TrialSummary | None, list[TrialSummary]]:
    """Trial counts by state, the best trial by the primary objective, and the top ``top_k``
    (with several objectives: the whole Pareto front, ordered by the primary objective)."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(trial.state.name for trial in trials)
    ranked = rank(study, [trial for trial in trials if trial.state == TrialState.COMPLETE and trial.values])
    top = [TrialSummary.of(trial) for trial in (ranked if len(study.directions) > 1 else ranked[:top_k])]
    return dict(counts), (top[0] if top else None), top
