"""How an invocation ends, in one place: the codes ``hpo`` exits with (:class:`ExitCode`, listed by
``hpo --help`` from :data:`EXIT_CODE_MEANINGS`) and the status the ledger, the MLflow parent run and
``--json-summary`` record (:class:`ExitStatus`). Imports nothing heavy: the help pages read it."""

from __future__ import annotations

from enum import Enum, IntEnum


class ExitCode(IntEnum):
    """What ``hpo`` exits with; :data:`EXIT_CODE_MEANINGS` says each in the words of ``hpo --help``."""

    OK = 0
    FAILED = 1  # every trial failed, or an unexpected error
    INVALID_INPUT = 2  # nothing written
    STUDY_LOCKED = 3
    BUDGET_SPENT = 4
    INTERRUPTED = 130


EXIT_CODE_MEANINGS = {
    ExitCode.OK: "ok",
    ExitCode.FAILED: "sweep failed",
    ExitCode.INVALID_INPUT: "invalid input (nothing written)",
    ExitCode.STUDY_LOCKED: "study locked by another run",
    ExitCode.BUDGET_SPENT: "--timeout spent before any trial started",
    ExitCode.INTERRUPTED: "interrupted",
}


class ExitStatus(str, Enum):
    """How an invocation ended, as the ledger, the MLflow parent run and ``--json-summary`` say it."""

    OK = "ok"
    BUDGET = "budget"  # the --timeout budget was spent
    INTERRUPTED = "interrupted"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value

    @property
    def mlflow_status(self) -> str:
        """The MLflow run status of the invocation's parent run."""
        return {ExitStatus.INTERRUPTED: "KILLED", ExitStatus.FAILED: "FAILED"}.get(self, "FINISHED")
