"""The one reporting surface a trial uses: hand each epoch's metrics to Ray Tune."""

from __future__ import annotations


def ray_tune_report(metrics: dict) -> None:
    """Report ``metrics`` to the Ray Tune session this trial runs in."""
    from ray import tune

    tune.report(metrics)
