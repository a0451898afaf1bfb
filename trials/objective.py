"""Which of two values of an objective is better: the one place that says what ``mode: max`` and
``mode: min`` mean, for early stopping in the trials and for the orchestrator's best so far, and
how a mode reads as an Optuna study direction and back."""

from __future__ import annotations

from typing import Literal

Mode = Literal["max", "min"]
"""An objective's direction: higher values are better (max) or lower ones (min)."""


def is_better(value: float, than: float | None, mode: Mode) -> bool:
    """True when ``value`` improves on ``than`` for an objective whose ``mode`` is "max" or "min"; any value beats None."""
    return than is None or (value > than if mode == "max" else value < than)


Direction = Literal["maximize", "minimize"]
"""An Optuna study direction, by name."""


def optuna_direction(mode: Mode) -> Direction:
    """The Optuna study direction ("maximize" or "minimize") of an objective whose ``mode`` is "max" or "min"."""
    return "maximize" if mode == "max" else "minimize"


def mode_of(direction: object) -> Mode:
    """The ``mode`` ("max" or "min") of an Optuna study direction, given as a ``StudyDirection`` or its name."""
    return "max" if str(getattr(direction, "name", direction)).lower() == "maximize" else "min"
