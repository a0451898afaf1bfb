"""Ray Tune's early-stopping schedulers, taught one rule: no trial is stopped while it warms up.

A trial whose learning rate is still warming up reports ``warming_up = 1``
(:mod:`trials.result_keys`); its score then says little about where it is going. These
schedulers do not see such reports, so a trial's first comparison happens at its first report
after warmup (ASHA records it at the rung it has reached by then). Time is the reported
``epoch``: fractions of an epoch with ``trial.evals_per_epoch > 1``.
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler

from trials.result_keys import WARMING_UP


class _SpareWarmup(TrialScheduler):
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(WARMING_UP):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class AshaAfterWarmup(_SpareWarmup, ASHAScheduler):
    """Asynchronous successive halving (and, with several brackets, asynchronous Hyperband)."""


class MedianAfterWarmup(_SpareWarmup, MedianStoppingRule):
    """Stops a trial whose best score is below the median of the others' running means."""
