"""Named samplers and schedulers. Each registry is a dict; :func:`check_known` explains unknown names."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import optuna

from trials.result_keys import EPOCH

if TYPE_CHECKING:  # search_space imports this module
    from orchestrator.search.search_space import SearchSpace

SamplerName = Literal["tpe", "random", "cmaes", "gp", "qmc", "grid", "nsga2"]
SchedulerName = Literal["fifo", "asha", "hyperband", "median"]


@dataclass(frozen=True)
class SamplerInputs:
    seed: int | None  # the sweep's sampler.seed
    n_startup_trials: int
    space: SearchSpace
    trials_so_far: int = 0  # trials the study held when this invocation opened it

    @property
    def draw_seed(self) -> int | None:
        """The seed of this invocation's random draws: ``seed`` itself on a new study; on a
        continued one, a seed derived from ``seed`` and the study's history, so each invocation
        draws new points and the same sequence of invocations draws the same ones."""
        if self.seed is None or self.trials_so_far == 0:
            return self.seed
        return int(np.random.SeedSequence([self.seed, self.trials_so_far]).generate_state(1)[0])


def _tpe(inputs: SamplerInputs) -> optuna.samplers.BaseSampler:
    # constant_liar: trials still running count as bad guesses, so parallel suggestions spread out
    # group: with conditional parameters, model each set of parameters that appear together
    with warnings.catch_warnings():  # "group is experimental": our choice, not the user's to act on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=inputs.draw_seed, multivariate=True, group=inputs.space.conditional, constant_liar=True,
            n_startup_trials=inputs.n_startup_trials,
        )


def _random(inputs: SamplerInputs) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=inputs.draw_seed)


def _cmaes(inputs: SamplerInputs) -> optuna.samplers.BaseSampler:
    # CMA-ES models numeric parameters only; categorical ones are drawn at random
    return optuna.samplers.CmaEsSampler(
        seed=inputs.draw_seed, n_startup_trials=inputs.n_startup_trials, warn_independent_sampling=False,
        independent_sampler=optuna.samplers.RandomSampler(seed=inputs.draw_seed),
    )


def _gp(inputs: SamplerInputs) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=inputs.draw_seed, n_startup_trials=inputs.n_startup_trials, warn_independent_sampling=False)


def _qmc(inputs: SamplerInputs) -> optuna.samplers.BaseSampler:
    # scrambled Sobol points cover the space more evenly than random ones; no model. The sequence
    # is the sweep's seed's: the study keeps its position, so a continued study takes the next points.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(
            qmc_type="sobol", scramble=True, seed=inputs.seed, warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=inputs.draw_seed),
        )


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler calls ``study.stop()`` once every point was tried, which only works
    inside ``study.optimize``; our searcher asks ``is_exhausted`` before each trial instead."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def _grid(inputs: SamplerInputs) -> optuna.samplers.BaseSampler:
    return _Grid(grid_points(inputs.space), seed=inputs.draw_seed)


def _nsga2(inputs: SamplerInputs) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=inputs.draw_seed, population_size=max(4, inputs.n_startup_trials))


SAMPLERS: dict[SamplerName, Callable[[SamplerInputs], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
    "cmaes": _cmaes,
    "gp": _gp,
    "qmc": _qmc,
    "grid": _grid,
    "nsga2": _nsga2,
}

MAX_GRID_POINTS = 100_000


class NotAGrid(ValueError):
    """The search space has no finite grid; ``name`` is the parameter at fault (None: the whole space)."""

    def __init__(self, name: str | None, fix: str) -> None:
        self.name = name
        self.fix = fix
        super().__init__(fix)


def grid_points(space) -> dict[str, list]:
    """Every value a grid search visits per parameter: categorical choices, or low..high by step."""
    from orchestrator.search.search_space import CategoricalParam, FloatParam

    if space.conditional:
        raise NotAGrid(None, "grid search needs every parameter in every trial; drop the `when` conditions or use another sampler")
    points: dict[str, list] = {}
    for name, param in space.params.items():
        if isinstance(param, CategoricalParam):
            points[name] = list(param.choices)
        elif isinstance(param, FloatParam) and param.step is None:
            raise NotAGrid(name, "grid search needs a finite set of values; give it a step or make it type: categorical")
        else:
            count = int(round((param.high - param.low) / param.step)) + 1
            values = [param.low + i * param.step for i in range(count)]
            points[name] = [int(v) for v in values] if not isinstance(param, FloatParam) else [float(np.round(v, 12)) for v in values]
    total = int(np.prod([len(values) for values in points.values()]))
    if total > MAX_GRID_POINTS:
        raise NotAGrid(None, f"the grid has {total} points (more than {MAX_GRID_POINTS}); use coarser steps or another sampler")
    return points


def _fifo(scheduler_config, max_epochs: int):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _asha(scheduler_config, max_epochs: int, brackets: int = 1):
    from ray.tune.schedulers import ASHAScheduler

    from orchestrator.search.schedulers import AshaAfterWarmup

    return (AshaAfterWarmup if scheduler_config.spare_warmup else ASHAScheduler)(
        time_attr=EPOCH,
        max_t=max_epochs,
        grace_period=scheduler_config.grace(max_epochs),
        reduction_factor=scheduler_config.reduction_factor,
        brackets=brackets,
    )


def _hyperband(scheduler_config, max_epochs: int):
    # Asynchronous Hyperband: several ASHA brackets with different grace periods. Ray's
    # synchronous HyperBandScheduler pauses trials until a bracket fills, which a concurrency
    # limit can turn into a deadlock.
    return _asha(scheduler_config, max_epochs, brackets=3)


def _median(scheduler_config, max_epochs: int):
    from ray.tune.schedulers import MedianStoppingRule

    from orchestrator.search.schedulers import MedianAfterWarmup

    return (MedianAfterWarmup if scheduler_config.spare_warmup else MedianStoppingRule)(
        time_attr=EPOCH,
        grace_period=scheduler_config.grace(max_epochs),
        min_samples_required=scheduler_config.min_samples_required,
    )


SCHEDULERS: dict[SchedulerName, Callable] = {"fifo": _fifo, "asha": _asha, "hyperband": _hyperband, "median": _median}


def check_known(registry: dict, name: str, what: str) -> str:
    """``name`` if the registry has it; otherwise a ValueError that lists the valid names."""
    if name not in registry:
        raise ValueError(f"unknown {what}; valid names are {', '.join(sorted(registry))}")
    return name
