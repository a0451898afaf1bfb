"""The bookkeeping keys every trial report carries beside its metrics: one home for their names,
read by the trial code that writes them and by the orchestrator that reads them."""

EPOCH = "epoch"  # epochs trained so far; a fraction with trial.evals_per_epoch > 1 (the schedulers' time unit)
STEP = "step"  # evaluations so far (1, 2, ...): the step of Optuna's intermediate values and MLflow's metrics
FINAL = "is_final"  # 1 on the last report of a trial that ran to its end
INTERIM = "interim"  # 1 on a report within an epoch: not a candidate for the trial's value
FROZEN_CACHE = "frozen_cache"  # "on: ..." or "off: why": whether the trial ran its frozen layers from the sweep's cache
WARMING_UP = "warming_up"  # 1 while the learning rate still warms up: schedulers do not stop the trial yet

BOOKKEEPING = frozenset({EPOCH, STEP, FINAL, INTERIM, WARMING_UP, FROZEN_CACHE})
