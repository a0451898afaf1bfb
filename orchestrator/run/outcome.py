"""How a finished Ray trial maps to one honest state, shared by the study and MLflow."""

from __future__ import annotations

import math
from dataclasses import dataclass

from optuna.trial import TrialState

from trials.objective import Mode, is_better
from trials.result_keys import EPOCH, FINAL, INTERIM

MLFLOW_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}


@dataclass(frozen=True)
class Outcome:
    state: TrialState
    value: float | None  # the primary objective
    reason: str
    values: tuple[float, ...] | None = None  # every objective, primary first (COMPLETE only)

    @property
    def mlflow_status(self) -> str:
        return MLFLOW_STATUS[self.state]


def best_of(values: list[float], mode: Mode) -> float | None:
    best = None
    for value in values:
        if math.isfinite(value) and is_better(value, best, mode):
            best = value
    return best


def classify(history: list[dict], metric: str, mode: Mode, error: str | None, others: tuple[str, ...] = ()) -> Outcome:
    """Decide a trial's state from its reported results and error, if any.

    - an error -> FAIL with the error as reason;
    - no reports, or a NaN/inf objective -> FAIL;
    - stopped before its own last epoch (by a scheduler or a budget) -> PRUNED;
    - otherwise COMPLETE, valued at the best epoch of ``metric`` (early stopping keeps the best
      epoch); the ``others`` objectives are read from that same epoch. Reports within an epoch
      (``interim``) help schedulers decide but are never the trial's value: they may score a
      subset of the validation split, and no model is kept from them.
    """
    if error:
        return Outcome(TrialState.FAIL, None, error)
    values = [float(result[metric]) for result in history if metric in result]
    if not values:
        return Outcome(TrialState.FAIL, None, f"the trial never reported {metric}")
    if not math.isfinite(values[-1]):
        return Outcome(TrialState.FAIL, None, f"{metric} is {values[-1]}")
    if not history[-1].get(FINAL):
        return Outcome(TrialState.PRUNED, None, f"stopped early after {_trained(history)}")
    epochs = [result for result in history if metric in result and not result.get(INTERIM)]
    best = best_of([float(result[metric]) for result in epochs], mode)
    if best is None:
        return Outcome(TrialState.FAIL, None, f"{metric} is not finite at any epoch's end")
    epoch = next(result for result in epochs if float(result[metric]) == best)
    for other in others:
        if other not in epoch:
            return Outcome(TrialState.FAIL, None, f"the trial never reported {other}")
        if not math.isfinite(float(epoch[other])):
            return Outcome(TrialState.FAIL, None, f"{other} is {epoch[other]}")
    return Outcome(TrialState.COMPLETE, best, "completed", (best, *(float(epoch[other]) for other in others)))


def _trained(history: list[dict]) -> str:
    """How far a stopped trial got: its last reported epoch (a fraction with sub-epoch reports)."""
    epoch = history[-1].get(EPOCH)
    if epoch is None:
        return f"{len(history)} epoch(s)"
    return f"{float(epoch):g} epoch(s)"
