"""The public Python API: what the CLI, a notebook or an Airflow task calls."""

from __future__ import annotations

from orchestrator import API_NAMES
from orchestrator.config import SweepConfig, load_sweep, parse_sweep
from orchestrator.prepare import PreparedSweep
from orchestrator.result import SweepResult
from orchestrator.runner import RunOptions, run_sweep
from orchestrator.runner import validate as validate_sweep

__all__ = list(API_NAMES)
