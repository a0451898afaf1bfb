"""What a sweep invocation returns: the state of the study after it, and the best trial."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import optuna

from orchestrator.exit_codes import ExitStatus
from orchestrator.secrets import mask
from orchestrator.storage.summary import TrialSummary, summarize_study
from trials.objective import Mode

if TYPE_CHECKING:
    from orchestrator.answer.settle import Answer
    from orchestrator.data.prepare import PreparedSweep
    from orchestrator.sweep.config import SweepConfig


@dataclass(frozen=True)
class SweepResult:
    study_name: str
    metric: str
    mode: Mode
    trials_this_run: dict[str, int]  # state name -> count, for trials started by this invocation
    study_trials: dict[str, int]  # state name -> count, over the whole study
    best: TrialSummary | None
    top: list[TrialSummary]
    baseline: dict[str, float]
    duration_s: float
    study_db: str  # masked
    mlflow_uri: str  # masked
    mlflow_experiment_id: str | None
    parent_run_id: str | None
    invocation_id: str | None = None
    interrupted: bool = False
    best_before: float | None = None  # the study's best value before this invocation
    new_best: bool = False  # this invocation found a better trial
    exit_status: ExitStatus = ExitStatus.OK
    notes: list[str] = field(default_factory=list)
    objectives: list[str] = field(default_factory=list)  # metric names, primary first; two or more: ``top`` is the Pareto front
    answer: dict | None = None  # orchestrator.answer.settle.Answer: the chosen configuration's search, confirmed and test scores
    splits: dict[str, int] = field(default_factory=dict)  # rows per split: train, validation, test

    def to_dict(self) -> dict:
        return asdict(self)


def sweep_result(
    config: SweepConfig, prepared: PreparedSweep, study: optuna.Study, *, this_run: dict[str, int], best_before: TrialSummary | None,
    started: float, experiment_id: str | None, parent_run_id: str | None, invocation_id: str | None, exit_status: ExitStatus,
    notes: list[str], answer: Answer | None = None,
) -> SweepResult:
    """What an invocation returns: the study as it now stands, beside what this invocation did.

    ``this_run``: trials it started, by state; ``best_before``: the study's best before it;
    ``started``: when it began (``time.time()``)."""
    study_counts, best, top = summarize_study(study)
    improved = best is not None and (best_before is None or best.number != best_before.number)
    return SweepResult(
        study_name=config.name,
        metric=config.objective.metric,
        mode=config.objective.mode,
        trials_this_run=this_run,
        study_trials=study_counts,
        best=best,
        top=top,
        baseline=prepared.baseline,
        duration_s=time.time() - started,
        study_db=mask(config.storage.study_db),
        mlflow_uri=mask(config.storage.mlflow),
        mlflow_experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        invocation_id=invocation_id,
        interrupted=exit_status == ExitStatus.INTERRUPTED,
        best_before=best_before.value if best_before else None,
        new_best=improved,
        exit_status=exit_status,
        notes=notes,
        objectives=[objective.metric for objective in config.objective_list],
        answer=answer.to_dict() if answer is not None else None,
        splits=prepared.splits.sizes() if prepared.splits is not None else {},
    )
