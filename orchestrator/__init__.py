"""Hyperparameter search orchestration: Ray Tune schedules, Optuna searches, SQL keeps the study, MLflow shows it.

Public API::

    from orchestrator import load_sweep, run_sweep
    result = run_sweep(load_sweep("sweeps/demo.yaml"))
    print(result.best)
"""

from orchestrator.errors import ConfigError, HpoError, StudyLockedError, SweepFailedError

API_NAMES = ("SweepConfig", "PreparedSweep", "SweepResult", "RunOptions", "load_sweep", "parse_sweep", "run_sweep", "validate_sweep")
"""What :mod:`orchestrator.api` exports; imported from there on first use, so ``import orchestrator``
stays fast (no Ray, MLflow or torch) until a sweep runs."""

__all__ = ["ConfigError", "HpoError", "StudyLockedError", "SweepFailedError", *API_NAMES]


def __getattr__(name: str):
    if name in API_NAMES:
        from orchestrator import api

        return getattr(api, name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
