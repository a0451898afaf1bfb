"""The function Ray Tune runs for each trial. Workers import ``trials`` only."""

from __future__ import annotations

import gc
from dataclasses import replace

import torch

from trials import checkpoint
from trials.finetune import Hyperparameters, TrialData, TrialSettings, fine_tune
from trials.hyperparameters import SEED_KEY
from trials.report import allow_slow_stop, ray_tune_report, restored_checkpoint


def run_trial(config: dict, settings: TrialSettings, data: TrialData) -> None:
    """Fine-tune with the hyperparameters in ``config``, reporting each epoch to Ray Tune.

    A trial that Ray restarts (its worker died) continues from its last checkpoint.
    """
    allow_slow_stop()
    config = dict(config)
    if SEED_KEY in config:
        settings = replace(settings, seed=int(config.pop(SEED_KEY)))
    try:
        with restored_checkpoint() as folder:
            resume = checkpoint.load(folder) if folder is not None else None
        fine_tune(settings, Hyperparameters.from_mapping(config), data, ray_tune_report, resume=resume)
    finally:
        release_accelerator_memory()


def release_accelerator_memory() -> None:
    """Give the GPU memory of a finished trial back to the device.

    Ray reuses a trial's worker process for the next trial; without this its caching allocator
    keeps the finished trial's blocks, and a trial packed beside it on the same GPU runs out of memory.
    """
    gc.collect()  # model and optimizer tensors held in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
