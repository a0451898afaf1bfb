"""Where an invocation's time goes, for ``bench/fixed_cost.py``: with ``HPO_PHASE_TIMES=PATH`` set,
each :func:`mark` appends one line, the phase that just ended and the wall-clock time, to PATH.
Unset (always, outside the benchmark), a mark does nothing."""

from __future__ import annotations

import os
import time

ENV = "HPO_PHASE_TIMES"


def mark(phase: str) -> None:
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as marks:
            marks.write(f"{phase} {time.time():.6f}\n")
