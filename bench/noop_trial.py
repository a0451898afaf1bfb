"""The no-op training function ``bench/fixed_cost.py`` runs through ``hpo run`` (``trial.function``):
it reports one score and returns, marking when it started and ended (HPO_PHASE_TIMES)."""

from __future__ import annotations

import os
import time

from trials import report


def _mark(phase: str) -> None:
    with open(os.environ["HPO_PHASE_TIMES"], "a") as marks:
        marks.write(f"{phase} {time.time():.6f}\n")


def main(config: dict) -> None:
    _mark("tune start")
    report.epoch({"score": config["x"]})
    _mark("trial")
