"""The one ranking of "best trials": the result, the answer, the confirmation, ``hpo best`` and
``hpo studies`` all order a study's trials with it."""

from __future__ import annotations

import optuna

from trials.objective import mode_of


def primary_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """The first objective's value (``trial.value`` raises in a multi-objective study)."""
    return trial.values[0] if trial.values else None


def rank(study: optuna.Study, complete: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Completed trials best first by the primary objective; with several objectives, only the Pareto front."""
    if len(study.directions) > 1:
        on_front = {trial.number for trial in study.best_trials}
        complete = [trial for trial in complete if trial.number in on_front]
    return sorted(complete, key=lambda trial: trial.values[0], reverse=maximized(study))  # complete trials have values


def maximized(study: optuna.Study) -> bool:
    """True when the study's primary objective is maximised: its higher values are better."""
    return mode_of(study.directions[0]) == "max"
