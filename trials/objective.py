"""Which of two values of an objective is better: the one place that says what ``mode: max`` and
``mode: min`` mean, for early stopping in the trials and for the orchestrator's best so far."""

from __future__ import annotations

from typing import Literal

Mode = Literal["max", "min"]
"""An objective's direction: higher values are better (max) or lower ones (min)."""


def is_better(value: float, than: float | None, mode: Mode) -> bool:
    """True when ``value`` improves on ``than`` for an objective whose ``mode`` is "max" or "min"; any value beats None."""
    return than is None or (value > than if mode == "max" else value < than)
