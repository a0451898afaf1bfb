"""Named points where a test can kill ``hpo run`` outright, to prove a run survives dying there.

With ``HPO_KILL_AT=<point>`` in the environment the process SIGKILLs itself on reaching that
point (its whole process group when it leads one, as a container runtime or the OOM killer
would); with ``HPO_KILL_SIGNAL=SIGTERM`` (or SIGINT) too, it sends itself that signal instead, as
`kill PID` would, and goes on. Unset, a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "before-first-trial",  # the invocation, its lease and its MLflow parent run exist; no trial yet
    "between-trials",  # a trial was recorded in all three stores; the next has not started
    "before-confirmation",  # the search's trials are recorded; no confirmation run has started
    "between-confirmation-runs",  # a confirmation run was recorded; the next has not started
    "before-test-score",  # every run is recorded; the answer is chosen, not yet scored on the test split
    "before-registration",  # the answer's test score is recorded; its model is not registered
    "after-registration",  # its model is registered; the answer in the study does not say so yet
    "before-summary",  # the answer is recorded in the study and on the parent run; the MLflow summary is not
    "mlflow-summary",  # every trial and the answer are recorded; the parent run is not ended
)


def reached(point: str) -> None:
    if os.environ.get("HPO_KILL_AT") != point:
        return
    number = signal.Signals[os.environ.get("HPO_KILL_SIGNAL", "SIGKILL")]
    if number != signal.SIGKILL:
        os.kill(os.getpid(), number)
        return
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
