"""The function Ray Tune runs for each trial. Workers import ``trials`` only."""

from __future__ import annotations

from trials import checkpoint
from trials.finetune import Hyperparameters, TrialData, TrialSettings, fine_tune
from trials.report import ray_tune_report, restored_checkpoint


def run_trial(config: dict, settings: TrialSettings, data: TrialData) -> None:
    """Fine-tune with the hyperparameters in ``config``, reporting each epoch to Ray Tune.

    A trial that Ray restarts (its worker died) continues from its last checkpoint.
    """
    with restored_checkpoint() as folder:
        resume = checkpoint.load(folder) if folder is not None else None
    fine_tune(settings, Hyperparameters.from_mapping(config), data, ray_tune_report, resume=resume)
