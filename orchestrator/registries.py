"""Named samplers and schedulers. Each registry is a dict; :func:`lookup` explains unknown names."""

from __future__ import annotations

from typing import Callable, TypeVar

import optuna

T = TypeVar("T")


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

SCHEDULERS: tuple[str, ...] = ("fifo", "asha")


def lookup(registry: dict[str, T], name: str, what: str) -> T:
    try:
        return registry[name]
    except KeyError:
        raise KeyError(f"unknown {what} {name!r}; valid names are {', '.join(sorted(registry))}") from None
