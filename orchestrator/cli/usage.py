"""Command-line usage errors said as one line, like every other error of ``hpo``.

Click (under typer) answers a bad option or argument with a usage box; :class:`OneLineUsageErrors`,
the class of the ``hpo`` command group, answers with one line naming the option or argument, the
value given and the fix, e.g. ``--n-trials: -3 is invalid: give a whole number of trials, 1 or
more, e.g. --n-trials 8`` (exit 2; with ``--json`` also a JSON document on stdout). ``--help`` and
plain ``hpo`` are unchanged.
"""

from __future__ import annotations

import os
import sys

import typer
from typer.core import TyperGroup

from orchestrator.cli.console import report_error
from orchestrator.errors import MISSING, ConfigError
from orchestrator.exit_codes import ExitCode
from orchestrator.secrets import mask

try:
    from typer._click import exceptions as usage  # typer >= 0.2x carries its own copy of click
except ImportError:  # pragma: no cover - an older typer builds on click itself
    from click import exceptions as usage  # type: ignore[no-redef]  # the same module, from click itself

# What a usage error says to do, by option or argument: plain advice with an example.
_USAGE_ADVICE = {
    "--n-trials": "give a whole number of trials, 1 or more, e.g. --n-trials 8",
    "--total-trials": "give a whole number of trials, 1 or more, e.g. --total-trials 40",
    "--top": "give a whole number, 1 or more, e.g. --top 3",
    "--wait": "give seconds, 0 or more, e.g. --wait 600",
    "SWEEP": "give the sweep file, e.g. sweeps/demo.yaml",
    "STUDY": "give the study's name (hpo studies lists them), e.g. tweets-minilm",
    "--out": "give the file to write, e.g. --out report.html",
}


class OneLineUsageErrors(TyperGroup):
    """``hpo`` itself: a command-line usage error is one line naming the option, the value and the
    fix (exit 2), like every other error, instead of click's usage box. ``--help`` is unchanged."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]  # click overloads main on standalone_mode; one wrapper serves both
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        args = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except usage.UsageError as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # plain `hpo`: the help, already shown by rich
                if error.format_message().strip():
                    error.show()
                sys.exit(error.exit_code)
            report_error(_usage_line(error, args), ExitCode.INVALID_INPUT, "--json" in args)
            sys.exit(ExitCode.INVALID_INPUT)
        except usage.ClickException as error:
            report_error(mask(error.format_message()), error.exit_code, "--json" in args)
            sys.exit(error.exit_code)
        except typer.Abort:
            report_error("aborted", ExitCode.FAILED, "--json" in args)
            sys.exit(ExitCode.FAILED)
        sys.exit(code if isinstance(code, int) else ExitCode.OK)


def _usage_line(error, args: list[str]) -> str:
    """``--n-trials: -3 is invalid: give a whole number ...``: the option (or argument), the value and the fix."""
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "hpo"
    param = getattr(error, "param", None)
    if isinstance(error, usage.NoSuchOption):
        close = sorted(error.possibilities or [])
        guess = f"did you mean {' or '.join(close)}? " if close else ""
        return mask(f"{error.option_name}: no such option of {command}; {guess}({command} --help lists them)")
    if isinstance(error, usage.BadOptionUsage):
        fix = _USAGE_ADVICE.get(error.option_name, f"see {command} --help")
        return mask(f"{error.option_name}: {_sentence(error.message)}; {fix}")
    if param is None or not isinstance(error, usage.BadParameter):
        message, see = _sentence(error.format_message()), f"see {command} --help"
        return mask(f"{command}: {message} ({see})" if message.endswith("?") else f"{command}: {message}; {see}")
    option = next((opt for opt in param.opts if opt.startswith("--")), None)
    name = option or param.name.upper()
    fix = _USAGE_ADVICE.get(name) or f"{_sentence(error.message)}; see {command} --help"
    if isinstance(error, usage.MissingParameter):
        return mask(str(ConfigError(name, MISSING, fix)))
    value = _given(param, option, args)
    if value is None:
        return mask(f"{name}: {fix}")
    return mask(str(ConfigError(name, value, fix)))


def _sentence(message: str) -> str:
    """A library's message as part of our line: lower-case start, no closing full stop."""
    message = " ".join(message.split()).rstrip(".")
    return message[:1].lower() + message[1:]


def _given(param, option: str | None, args: list[str]):
    """The value an option was given on the command line (the last one wins), or from its environment variable."""
    value = None
    for index, arg in enumerate(args):
        if option and arg == option and index + 1 < len(args):
            value = args[index + 1]
        elif option and arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    if value is None and isinstance(getattr(param, "envvar", None), str):
        value = os.environ.get(param.envvar)
    if value is None:
        return None
    for number in (int, float):
        try:
            return number(value)
        except ValueError:
            pass
    return value
