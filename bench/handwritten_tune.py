"""The baseline ``bench/fixed_cost.py`` times: the same no-op trial, one of it, as a user would wire
it by hand with Ray Tune and Optuna's TPE (OptunaSearch) on a SQLite study. Marks its phases like
``hpo run`` does (HPO_PHASE_TIMES), so the two line up phase by phase."""

from __future__ import annotations

import os
import sys
import tempfile
import time


def mark(phase: str) -> None:
    with open(os.environ["HPO_PHASE_TIMES"], "a") as marks:
        marks.write(f"{phase} {time.time():.6f}\n")


import optuna  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

mark("imports")


def noop(config: dict) -> None:
    mark("tune start")
    tune.report({"score": config["x"]})
    mark("trial")


def main() -> None:
    workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    mark("validation")  # nothing to validate
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    mark("ray start")
    search = OptunaSearch(metric="score", mode="max", sampler=optuna.samplers.TPESampler(seed=0),
                          storage=optuna.storages.RDBStorage(f"sqlite:///{workdir}/handwritten.db"), study_name="fixed-cost")
    mark("study open")
    tuner = tune.Tuner(
        noop,
        param_space={"x": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(search_alg=search, num_samples=1),
        run_config=tune.RunConfig(storage_path=f"{workdir}/ray", verbose=0),
    )
    results = tuner.fit()
    mark("tune stop")
    best = results.get_best_result(metric="score", mode="max")
    print(f"best score {best.metrics['score']:.3f} with {best.config}")
    mark("result")
    ray.shutdown()
    mark("shutdown")


if __name__ == "__main__":
    main()
