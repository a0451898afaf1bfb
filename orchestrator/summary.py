"""What an ML lead reads in MLflow once an invocation ends: plots and tables on the parent run,
the study at a glance in the experiment's description, and the best model registered."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.config import SweepConfig
    from orchestrator.prepare import PreparedSweep
    from orchestrator.recorder import TrialRecorder
    from orchestrator.tracking import MlflowTracker


def summarise(config: SweepConfig, prepared: PreparedSweep, study, tracker: MlflowTracker, parent_run_id: str,
              recorder: TrialRecorder, invocation_id: str) -> list[str]:
    """Write the invocation's summary to MLflow; return notes for the user. A failure here is
    reported, never fatal: the trials are already recorded."""
    from orchestrator.best_model import register_best_model
    from orchestrator.report import write_summary
    from orchestrator.tracking import mlflow_ui

    notes = []
    try:
        with tempfile.TemporaryDirectory(prefix="hpo-summary-") as folder:
            write_summary(study, Path(folder), mlflow_ui(config.storage.mlflow))
            tracker.log_artifacts(parent_run_id, Path(folder), "summary")
    except Exception as error:  # noqa: BLE001 - plots are a courtesy; the study is already saved
        notes.append(f"summary plots not logged: {type(error).__name__}: {error}")
    if recorder.kept is not None and config.registered_model:
        try:
            version = register_best_model(
                recorder.kept, prepared.model_path, prepared.label_names, config.storage.mlflow, config.registered_model,
                tags={"hpo.study": config.name, "hpo.invocation_id": invocation_id},
            )
            tracker.set_tags(parent_run_id, {"hpo.registered_model": f"{config.registered_model}/{version}"})
            notes.append(f"registered the best model as {config.registered_model} version {version} (trial {recorder.kept.trial_number})")
        except Exception as error:  # noqa: BLE001
            notes.append(f"best model not registered: {type(error).__name__}: {error}")
        finally:
            shutil.rmtree(recorder.kept.weights_file.parent, ignore_errors=True)
    tracker.describe_study(study, config.objective.metric)
    return notes
