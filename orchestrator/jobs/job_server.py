"""Sweeps as Ray jobs: the job server's address, the client, and how a job names its study.

The job server is the REST API on a Ray head's dashboard port (8265), reached with Ray's own
``JobSubmissionClient``. A sweep's job carries its study in the job's metadata (:data:`STUDY_KEY`)
and has the id ``hpo-<study>-<n>``; everything here finds jobs by those two facts.
"""

from __future__ import annotations

import re
import shlex
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import TypeGuard

from orchestrator.errors import ConfigError, ExitCode, HpoError
from orchestrator.secrets import mask

STUDY_KEY = "hpo.study"  # metadata: the study the job runs
SWEEP_KEY = "hpo.sweep"  # metadata: the sweep file's name in the job's working directory
STUDY_DB_KEY = "hpo.study_db"  # metadata: the study database URL as written (``${VAR}`` unexpanded; never a password)
ACTIVE = ("PENDING", "RUNNING")
ENV_REFERENCE = re.compile(r"\$\{(\w+)\}|\$(\w+)")  # how a sweep file names an environment variable
ADDRESS_EXAMPLE = "http://HEAD:8265"
ADDRESS_FIX = f"give the Ray head's job server, e.g. --address {ADDRESS_EXAMPLE} or export RAY_ADDRESS={ADDRESS_EXAMPLE}"
PROBE_KEY = "hpo.probe"  # metadata of the short job that checks the head's Python before a sweep is submitted
PROBE_CODE = "import orchestrator.cli, trials"  # what `python -m orchestrator.cli run` needs first
PROBE_TIMEOUT_S = 120.0
# A line of a failed job's output that says why: hpo's own one-line errors, a Python exception, the shell's complaint.
_ERROR_LINE = re.compile(r"^(error: .+|(\w+\.)*\w*(Error|Exception|Exit)\b(: .+)?|.*(: not found|command not found|No such file or directory|Permission denied).*)$")
# `python -m package` that cannot import it: "python3: Error while finding module specification for 'x' (ModuleNotFoundError: ...)".
_INNER_ERROR = re.compile(r"\((\w*(?:Error|Exception): [^()]+)\)\s*$")


class StudyJobRunningError(HpoError):
    """A job of this study is already running on the cluster (exit 3, like a held study lease)."""

    exit_code = ExitCode.STUDY_LOCKED

    def __init__(self, study: str, job_id: str, address: str) -> None:
        super().__init__(
            f"study {study!r} is being run by job {job_id} on {address}; follow it with hpo logs {job_id} --follow, "
            f"stop it with hpo stop {job_id}, or give this sweep another name"
        )


def is_job_server_address(address: str | None) -> TypeGuard[str]:
    return address is not None and address.startswith(("http://", "https://"))


def job_server_address(option: str | None, option_field: str, cluster_address: str | None = None) -> str:
    """The job server to use: ``option`` (``--address`` or ``RAY_ADDRESS``), else a sweep's
    ``cluster.address`` of the form http://HEAD:8265. Raises :class:`ConfigError` naming the field."""
    if option:
        check_job_server_address(option, option_field)
        return option.rstrip("/")
    if is_job_server_address(cluster_address):
        check_job_server_address(cluster_address, "cluster.address")
        return cluster_address.rstrip("/")
    raise ConfigError("--address", cluster_address or "<missing>", ADDRESS_FIX)


def check_job_server_address(address: str, field: str) -> None:
    parts = urllib.parse.urlsplit(address) if is_job_server_address(address) else None
    try:
        port_ok = parts is not None and (parts.port is None or 0 < parts.port < 65536)
    except ValueError:
        port_ok = False
    if parts is None or not port_ok or not parts.hostname or any(c.isspace() for c in address) or parts.path not in ("", "/"):
        raise ConfigError(field, address, f"not a job server address; {ADDRESS_FIX}")


def connect(address: str, debug: bool = False):
    """Ray's job client for ``address``, sending this machine's Ray auth token when it has one; Ray's
    own log lines (token mode, package uploads) only with ``debug``."""
    from ray.job_submission import JobSubmissionClient

    from orchestrator.run.ray_session import _use_ray_auth_token_if_any

    quiet_ray(debug)
    _use_ray_auth_token_if_any()

    try:
        return JobSubmissionClient(address)
    except Exception as error:  # noqa: BLE001 - Ray raises ConnectionError, AuthenticationError, RuntimeError...
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError("--address", address, f"no Ray job server answers there ({mask(first_line)[:160]}); "
                          "start the head with ray[default] installed (ray start --head --dashboard-host 0.0.0.0) "
                          "and check the address, its port (8265) and the Ray auth token (~/.ray/auth_token)") from None


def check_python(client, python: str, address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Run ``python -c 'import orchestrator.cli, trials'`` on the head as a short job (deleted after): a
    head whose Python lacks hpo is refused here, with its own error, instead of failing the sweep's job.
    Raises :class:`ConfigError` naming ``--python``."""
    job_id = client.submit_job(entrypoint=shlex.join([python, "-c", PROBE_CODE]), submission_id=f"hpo-probe-{uuid.uuid4().hex[:12]}",
                               metadata={PROBE_KEY: "python"})
    try:
        status = wait_until_done(client, job_id, timeout_s, poll_s=0.25)
        if status in ACTIVE:  # the head is too busy to say in time: the sweep's job will tell
            client.stop_job(job_id)
            return
        if status != "SUCCEEDED":
            reason = failure_reason(client.get_job_logs(job_id)) or f"the probe job ended {status}"
            raise ConfigError("--python", python, f"the head node's Python on {address} cannot run hpo ({mask(reason)[:200]}); give the Python "
                              "that has hpo installed there, e.g. --python /opt/hpo/.venv/bin/python, or install hpo in the head's image")
    finally:
        try:
            if client.get_job_status(job_id).is_terminal():
                client.delete_job(job_id)
        except Exception:  # noqa: BLE001 - a probe left in the job list harms nothing
            pass


def failure_reason(output: str | None) -> str | None:
    """The last line of a failed job's output (or Ray's message, which ends with it) that says why it failed."""
    for line in reversed([line.strip() for line in (output or "").splitlines() if line.strip()]):
        if _ERROR_LINE.match(line):
            return line
        if inner := _INNER_ERROR.search(line):
            return inner.group(1)
    return None


def quiet_ray(debug: bool) -> None:
    """Ray's own log lines (token mode, package uploads, websockets) only with --debug: importing Ray set them to INFO."""
    import logging

    for name in [name for name in logging.root.manager.loggerDict if name == "ray" or name.startswith("ray.")]:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.ERROR)


def variables(text: str) -> list[str]:
    """The environment variables ``text`` names (``${VAR}`` or ``$VAR``)."""
    return sorted({a or b for a, b in ENV_REFERENCE.findall(text)})


def study_jobs(client, study: str | None = None) -> list:
    """The cluster's ``hpo`` jobs (of ``study`` if given), oldest first."""
    jobs = [job for job in client.list_jobs() if (job.metadata or {}).get(STUDY_KEY)]  # probes have none
    if study is not None:
        jobs = [job for job in jobs if job.metadata[STUDY_KEY] == study]
    return sorted(jobs, key=lambda job: (job.start_time or 0, job.submission_id or ""))


def running_job(client, study: str):
    """The study's job that is pending or running, if any."""
    return next((job for job in reversed(study_jobs(client, study)) if status_of(job) in ACTIVE), None)


def next_job_id(client, study: str) -> str:
    """``hpo-<study>-<n>``, one more than the highest ``n`` the cluster has seen for this study."""
    pattern = re.compile(rf"^hpo-{re.escape(study)}-(\d+)$")
    numbers = [int(m.group(1)) for job in client.list_jobs() if (m := pattern.match(job.submission_id or ""))]
    return f"hpo-{study}-{max(numbers, default=0) + 1}"


def find_job(client, job_id: str, address: str):
    for job in client.list_jobs():
        if job.submission_id == job_id:
            return job
    known = ", ".join(job.submission_id for job in study_jobs(client)) or "none"
    raise ConfigError("JOB_ID", job_id, f"no such job on {address}; hpo jobs there: {known}")


def wait_until_done(client, job_id: str, timeout_s: float, poll_s: float = 1.0) -> str:
    """The job's status once it is terminal, or its current status when ``timeout_s`` runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get_job_status(job_id)
        if status.is_terminal() or time.monotonic() >= deadline:
            return str(status.value)
        time.sleep(poll_s)


def follow_logs(client, job_id: str, write: Callable[[str], object]) -> None:
    """Write the job's log as it grows, until the job ends (Ray's own tail over its websocket)."""
    import asyncio

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())


def status_of(job) -> str:
    status = job.status
    return str(getattr(status, "value", status))
