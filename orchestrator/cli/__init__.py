"""The ``hpo`` command line: a thin layer over :mod:`orchestrator.api`.

Exit codes (:mod:`orchestrator.exit_codes`): 0 success; 1 the sweep failed (every trial
failed, or an unexpected error); 2 invalid input (sweep file, model, data, where the run writes,
Ray address, command line), nothing written; 3 another invocation holds the study; 4 the
--timeout budget was spent before any trial started; 130 interrupted (SIGINT or SIGTERM; a
second signal exits at once). Every error is one line on stderr naming the field or option, the
value and the fix.

The commands by group: :mod:`~orchestrator.cli.sweep_commands` (validate, run),
:mod:`~orchestrator.cli.study_commands` (studies, trials, best, export, report, evaluate) and
:mod:`~orchestrator.cli.job_commands` (submit, status, logs, stop), all on the app of
:mod:`~orchestrator.cli.app`; what they print: :mod:`~orchestrator.cli.console` (stdout, stderr,
one-line errors), :mod:`~orchestrator.cli.usage` (usage errors), :mod:`~orchestrator.cli.output`
(a run's result), :mod:`~orchestrator.cli.jobs` (the job commands' work).
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading

from orchestrator.cli.app import app

# Each group registers its commands on the app when imported; this order is hpo --help's.
from orchestrator.cli import sweep_commands  # noqa: E402,F401  isort: skip
from orchestrator.cli import study_commands  # noqa: E402,F401  isort: skip
from orchestrator.cli import job_commands  # noqa: E402,F401  isort: skip

__all__ = ["app", "main"]


def main() -> None:
    """Run the command, then end the process at once: exit hooks (Ray's shutdown, logging's flush)
    and the threads still running finish first, but the interpreter's teardown, seconds of module
    finalisation once torch, transformers and Ray are imported, is skipped. Everything the command
    wrote is committed or closed before it returns."""
    try:
        app()
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    exit_now(code)


def exit_now(code: object) -> None:
    if isinstance(code, str):  # sys.exit("message"): printed, exit 1
        print(code, file=sys.stderr)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    _close_databases()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (hpo trials | head): nothing more to say there
            pass
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def _close_databases() -> None:
    """Close the connections every database engine still pools, as the interpreter's teardown would:
    SQLite folds its write-ahead log into the database file when its last connection closes, so a
    finished run leaves one whole file (copyable alone), and the next reader, the last to close,
    has nothing to fold in (a read-only command writes nothing)."""
    sqlalchemy = sys.modules.get("sqlalchemy")
    if sqlalchemy is None:
        return
    # type(), not isinstance(): isinstance reads __class__, which some module objects answer with a deprecation warning
    for engine in [found for found in gc.get_objects() if issubclass(type(found), sqlalchemy.engine.Engine)]:
        try:
            engine.dispose()
        except Exception:  # noqa: BLE001 - the command's work is done; a database that cannot close is the next run's to find
            pass
