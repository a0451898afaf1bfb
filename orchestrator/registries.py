"""Named samplers and schedulers. Each registry is a dict; :func:`lookup` explains unknown names."""

from __future__ import annotations

from typing import Callable

import optuna

def _tpe(seed: int | None, n_startup_trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, constant_liar=True, n_startup_trials=n_startup_trials
    )


def _random(seed: int | None, n_startup_trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable[[int | None, int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
}

def _fifo(scheduler_config, max_epochs: int):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _asha(scheduler_config, max_epochs: int):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_epochs,
        grace_period=scheduler_config.grace_period,
        reduction_factor=scheduler_config.reduction_factor,
    )


SCHEDULERS: dict[str, Callable] = {"fifo": _fifo, "asha": _asha}


def check_known(registry: dict, name: str, what: str) -> str:
    """``name`` if the registry has it; otherwise a ValueError that lists the valid names."""
    if name not in registry:
        raise ValueError(f"unknown {what}; valid names are {', '.join(sorted(registry))}")
    return name
