"""The function Ray Tune runs for each trial. Workers import ``trials`` only."""

from __future__ import annotations

from trials.finetune import Hyperparameters, TrialData, TrialSettings, fine_tune
from trials.report import ray_tune_report


def run_trial(config: dict, settings: TrialSettings, data: TrialData) -> None:
    """Fine-tune with the hyperparameters in ``config``, reporting each epoch to Ray Tune."""
    fine_tune(settings, Hyperparameters.from_mapping(config), data, ray_tune_report)
