"""Named points where a test can kill ``hpo run`` outright, to prove a run survives dying there.

With ``HPO_KILL_AT=<point>`` in the environment the process SIGKILLs itself on reaching that
point (its whole process group when it leads one, as a container runtime or the OOM killer
would). Unset, a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "before-first-trial",  # the invocation, its lease and its MLflow parent run exist; no trial yet
    "between-trials",  # a trial was recorded in all three stores; the next has not started
    "between-confirmation-runs",  # a confirmation run was recorded; the next has not started
    "mlflow-summary",  # every trial is recorded; the parent run's summary is not
)


def reached(point: str) -> None:
    if os.environ.get("HPO_KILL_AT") != point:
        return
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
