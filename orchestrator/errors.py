"""Exceptions raised by the orchestrator.

Every error a user can cause derives from :class:`HpoError`, so scripts can catch one
class; the CLI maps each subclass to a documented exit code (:mod:`orchestrator.exit_codes`).
"""

from __future__ import annotations

from orchestrator.exit_codes import ExitCode

MISSING = object()
"""Stands for the value of a required key that is absent."""

UNKNOWN_KEY = object()
"""Stands for the value of a key its section does not have: the key itself is the problem."""


class HpoError(Exception):
    """Root of every error this package raises on purpose."""

    exit_code = ExitCode.FAILED


class ConfigError(HpoError):
    """The sweep file (or a value it points at) is invalid. Raised before any compute starts.

    The message names the field path, the value received and the fix, on one line. The value is
    masked here (:func:`orchestrator.secrets.mask`), in the message and in :attr:`value`: a caller
    passes it as given.
    """

    exit_code = ExitCode.INVALID_INPUT

    def __init__(self, field: str, value: object, fix: str) -> None:
        self.field = field
        self.value = _masked(value)
        self.fix = " ".join(fix.split())  # one line, whatever a library's message held (pandas' end in newlines)
        shown = "is missing" if value is MISSING else "unknown key" if value is UNKNOWN_KEY else f"{_short(self.value)} is invalid"
        super().__init__(f"{field}: {shown}: {self.fix}")


class StudyLockedError(HpoError):
    """Another ``hpo run`` holds the study's lease."""

    exit_code = ExitCode.STUDY_LOCKED

    def __init__(self, study_name: str, holder: dict | None) -> None:
        self.study_name = study_name
        self.holder = holder
        where = f" (pid {holder['pid']} on {holder['host']})" if holder else ""
        super().__init__(
            f"study {study_name!r} is being run by another hpo invocation{where}; "
            "wait for it, pass --wait SECONDS, or give this sweep another name"
        )


class SweepFailedError(HpoError):
    """The sweep ran but could not finish (every trial failed, or the backend broke)."""

    exit_code = ExitCode.FAILED


def _masked(value: object) -> object:
    from orchestrator.secrets import mask

    return mask(value) if isinstance(value, str) else value


def _short(value: object, limit: int = 80) -> str:
    from orchestrator.secrets import mask

    text = mask(repr(value))  # before cutting: a cut password no longer matches what masks it
    return text if len(text) <= limit else text[: limit - 3] + "..."
