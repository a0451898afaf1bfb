"""The phases of a sweep invocation, announced as they start and end, for whoever watches.

Each phase (preparing the data, building the frozen-layer cache, scoring on the test split, ...)
is a ``with phase("..."):`` block; it logs one record when it starts and one when it ends (with
its seconds, or that it failed) on the ``hpo.progress`` logger. ``hpo run`` shows them
(:class:`orchestrator.cli.progress.SweepProgress`); a script using the Python API sees them with
``logging.basicConfig(level=logging.INFO)``. Phase names and details never hold secrets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOGGER = logging.getLogger("hpo.progress")

START, END, FAIL = "start", "end", "fail"


@dataclass
class Phase:
    """A phase in progress; set ``detail`` to add a result to its closing line (a size, a count)."""

    what: str
    detail: str = ""


@contextmanager
def phase(what: str) -> Iterator[Phase]:
    """Announce ``what`` (a gerund phrase: "building the frozen-layer cache") when it starts and when it ends."""
    current = Phase(what)
    started = time.monotonic()
    LOGGER.info("%s ...", what, extra={"phase": what, "event": START})
    try:
        yield current
    except BaseException as error:
        seconds = time.monotonic() - started
        LOGGER.info("%s: stopped after %.0fs (%s)", what, seconds, type(error).__name__,
                    extra={"phase": what, "event": FAIL, "seconds": seconds, "detail": type(error).__name__})
        raise
    seconds = time.monotonic() - started
    detail = f": {current.detail}" if current.detail else ""
    LOGGER.info("%s: done in %.0fs%s", what, seconds, detail, extra={"phase": what, "event": END, "seconds": seconds, "detail": current.detail})


def announce(message: str) -> None:
    """One line on its own: what a phase decided (how many trials run, a cache left off and why)."""
    LOGGER.info("%s", message, extra={"event": "note"})
