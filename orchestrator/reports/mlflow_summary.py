"""What an ML lead reads in MLflow once an invocation ends: plots and tables on the parent run and
the study at a glance in the experiment's description (the answer and the registered model: orchestrator.answer.settle)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.sweep.config import SweepConfig
    from orchestrator.tracking.tracker import MlflowTracker


def summarise(config: SweepConfig, study, tracker: MlflowTracker, parent_run_id: str) -> list[str]:
    """Write the invocation's summary to MLflow; return notes for the user. A failure here is
    reported, never fatal: the trials are already recorded."""
    from orchestrator.reports.study_report import write_summary
    from orchestrator.tracking.tracker import mlflow_ui

    notes = []
    try:
        with tempfile.TemporaryDirectory(prefix="hpo-summary-") as folder:
            write_summary(study, Path(folder), mlflow_ui(config.storage.mlflow))
            tracker.log_artifacts(parent_run_id, Path(folder), "summary")
    except Exception as error:  # noqa: BLE001 - plots are a courtesy; the study is already saved
        notes.append(f"summary plots not logged: {type(error).__name__}: {error}")
    tracker.describe_study(study, config.objective.metric)
    return notes
