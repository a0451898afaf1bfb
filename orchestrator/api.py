"""The public Python API: what the CLI, a notebook or an Airflow task calls."""

from __future__ import annotations

from orchestrator import API_NAMES
from orchestrator.run.result import SweepResult
from orchestrator.run.runner import RunOptions, run_sweep
from orchestrator.run.runner import validate as validate_sweep
from orchestrator.sweep.config import SweepConfig, load_sweep, parse_sweep

__all__ = list(API_NAMES)


def __getattr__(name: str) -> type:
    """PreparedSweep on first use: its module loads torch and transformers, which hpo validate and
    hpo run need only once the sweep's targets are checked."""
    if name == "PreparedSweep":
        from orchestrator.data.prepare import PreparedSweep

        return PreparedSweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
