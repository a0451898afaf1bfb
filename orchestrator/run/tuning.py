"""One Ray Tune run: trials that a :class:`~orchestrator.search.searcher.StudySearcher` proposes, run by
the sweep's trainable, recorded by a :class:`~orchestrator.run.recorder.TrialRecorder`. A sweep
invocation makes one for the search and, with ``confirm``, one for the confirmation runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.data.trial_settings import trial_settings
from orchestrator.progress.phase_marks import mark
from orchestrator.run.resources import ray_request
from orchestrator.search.registries import SCHEDULERS


def scheduler(config, label: str = "search"):
    """The search's scheduler; confirmation runs are never stopped early (FIFO)."""
    return SCHEDULERS[config.scheduler.name if label == "search" else "fifo"](config.scheduler, config.trial.max_epochs)


def trainable(prepared, trial_function: Callable | None, keep_best_model: bool):
    """What each trial runs: the built-in fine-tuning of the sweep's task, or a function of your own.
    Only the training and validation splits travel: the test split stays on the driver."""
    from ray import tune

    default: Callable[..., None]  # the two take different settings and data
    if prepared.config.user_function:
        from trials.user_function import run_user_function

        default = run_user_function
    else:
        from trials.entrypoint import run_trial

        default = run_trial
    run = tune.with_parameters(trial_function or default, settings=trial_settings(prepared, keep_best_model), data=prepared.data)
    return tune.with_resources(run, ray_request(prepared.config.resources))


def fit(prepared, searcher, recorder, n_trials: int, *, stoppers: list, callbacks: tuple, trial_function: Callable | None,
        keep_best_model: bool, results_dir: Path, label: str = "search") -> None:
    """Run ``n_trials`` trials of ``searcher`` through Ray Tune, recorded by ``recorder``."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.stopper import CombinedStopper

    config = prepared.config
    mark("study open")
    tuner = tune.Tuner(
        trainable(prepared, trial_function, keep_best_model),
        tune_config=tune.TuneConfig(
            metric=config.objective.metric,
            mode=config.objective.mode,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=config.budget.max_concurrent),
            scheduler=scheduler(config, label),
            num_samples=n_trials,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=f"{config.name}-{label}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(results_dir / "ray"),
            callbacks=[recorder, *callbacks],
            stop=CombinedStopper(*stoppers),
            failure_config=tune.FailureConfig(max_failures=config.trial.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
            log_to_file=False,
        ),
    )
    tuner.fit()
    mark("tune stop")
