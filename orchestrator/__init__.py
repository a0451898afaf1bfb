"""Hyperparameter search orchestration: Ray Tune schedules, Optuna searches, SQL keeps the study, MLflow shows it.

Public API::

    from orchestrator import load_sweep, run_sweep
    result = run_sweep(load_sweep("sweeps/demo.yaml"))
    print(result.best)
"""

from orchestrator.errors import ConfigError, HpoError, StudyLockedError, SweepFailedError

__all__ = ["ConfigError", "HpoError", "StudyLockedError", "SweepFailedError", "load_sweep", "run_sweep", "validate_sweep", "RunOptions"]


def __getattr__(name: str):
    # Imported lazily: ``import orchestrator`` stays fast (no Ray, MLflow or torch) until a sweep runs.
    if name in {"load_sweep", "run_sweep", "validate_sweep", "RunOptions", "parse_sweep", "SweepResult"}:
        from orchestrator import api

        return getattr(api, name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
