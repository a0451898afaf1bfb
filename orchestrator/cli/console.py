"""Where the ``hpo`` command line speaks, and how it ends.

``out`` is stdout (results, tables, JSON) and ``err`` stderr (errors, notes, progress); one JSON
document goes to stdout with :func:`print_json`, secrets masked; :func:`report_error` says an
error as the one line on stderr (and, with ``--json``, a JSON document on stdout), and
:func:`one_line_errors`, around each command, turns what it raises into that line and an exit
code (:class:`orchestrator.exit_codes.ExitCode`). The commands (:mod:`orchestrator.cli`),
the usage errors (:mod:`orchestrator.cli.usage`) and the rendering of results
(:mod:`orchestrator.cli.output`) all print through here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from orchestrator.errors import HpoError
from orchestrator.exit_codes import ExitCode
from orchestrator.secrets import mask

# Piped output (cron logs, CI) gets a wide fixed width so result tables are not truncated.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def print_json(document) -> None:
    """Print one JSON document on stdout, secrets masked (in their JSON-escaped form too)."""
    print(mask(json.dumps(document, default=str)))


def report_error(message: str, code: int, as_json: bool) -> None:
    """One line on stderr; with --json also one JSON document on stdout."""
    if as_json:
        print_json({"ok": False, "error": message, "exit_code": code})
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)


@contextmanager
def one_line_errors(debug: bool, as_json: bool) -> Iterator[None]:
    """Turn our errors into one line on stderr and an exit code; tracebacks only with --debug."""
    try:
        yield
    except typer.Exit:
        raise
    except HpoError as error:
        if debug:
            _print_traceback()
        _fail(mask(str(error)), error.exit_code, as_json)
    except KeyboardInterrupt:
        _fail("interrupted", ExitCode.INTERRUPTED, as_json)
    except Exception as error:  # noqa: BLE001 - the last line of defence for the CLI
        if debug:
            _print_traceback()
        hint = "" if debug else " (run again with --debug for the traceback)"
        _fail(mask(f"unexpected error: {type(error).__name__}: {error}") + hint, ExitCode.FAILED, as_json)


def _print_traceback() -> None:
    import traceback

    err.print(mask(traceback.format_exc()), highlight=False, markup=False, soft_wrap=True)


def _fail(message: str, code: int, as_json: bool) -> None:
    report_error(message, code, as_json)
    raise typer.Exit(code)
