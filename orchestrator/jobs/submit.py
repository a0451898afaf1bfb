"""``hpo submit``: check a sweep here, then run ``hpo run`` on it as a Ray job on the cluster's head.

The job's working directory is the sweep file's folder (Ray uploads it), so the files the sweep
names by relative path (search space, training function, data) travel with it and must lie in
that folder. Where the job writes (the study database, MLflow, ``results_dir``) must outlive the
job's temporary working directory: an absolute path on the head node or a server. ``${VAR}``s in
the sweep file are expanded by ``hpo run`` on the head, from the environment there; their values
never leave this machine, and none is put in the job's entrypoint, metadata or runtime_env.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import MISSING, ConfigError
from orchestrator.jobs import job_server as jobs
from orchestrator.secrets import url_secrets
from orchestrator.sweep import default_stores
from orchestrator.sweep.bundled import is_bundled
from orchestrator.sweep.config import SweepConfig, load_sweep, read_yaml_file

# Seconds Ray waits after the stop signal before it kills the job: time for `hpo run` to stop its
# trials and record them (Ray's own default, 3 s, would cut that short).
STOP_GRACE_S = 120
# Never uploaded with the sweep's folder: databases, run outputs, caches.
EXCLUDES = [".git", "__pycache__", "*.pyc", ".venv", "*.db", "*.db-journal", "*.db-wal", "*.db-shm", default_stores.RESULTS_DIR, "mlruns", "mlartifacts"]
_DEFAULT_STORAGE = {"study_db": default_stores.STUDY_DB, "mlflow": default_stores.MLFLOW, "results_dir": default_stores.RESULTS_DIR}
_WHERE = "the job's working directory is a temporary copy of the sweep file's folder on the cluster"


@dataclass(frozen=True)
class RunArgs:
    """The ``hpo run`` options a submitted job passes on."""

    n_trials: int | None = None
    total_trials: int | None = None
    timeout: str | None = None
    wait_s: float = 0.0
    new_study: bool = False
    debug: bool = False

    def words(self) -> list[str]:
        words: list[str] = []
        for flag, value in (("--n-trials", self.n_trials), ("--total-trials", self.total_trials), ("--timeout", self.timeout)):
            if value is not None:
                words += [flag, str(value)]
        if self.wait_s:
            words += ["--wait", f"{self.wait_s:g}"]
        if self.new_study:
            words.append("--new-study")
        if self.debug:
            words.append("--debug")
        return words


@dataclass(frozen=True)
class JobPlan:
    """Everything a submission sends: nothing in it holds a secret."""

    study: str
    sweep_file: str
    working_dir: str
    entrypoint: str
    metadata: dict[str, str]
    runtime_env: dict = field(default_factory=dict)
    python: str = "python"
    run_args: tuple[str, ...] = ()


def entrypoint_command(python: str, sweep: str, run_args: tuple[str, ...] | list[str]) -> str:
    """The job's command: the project's CLI, run by the head node's Python, on the sweep file."""
    return shlex.join([python, "-m", "orchestrator.cli", "run", sweep, *run_args])


def plan_job(sweep: Path, args: RunArgs, python: str = "python") -> tuple[SweepConfig, JobPlan]:
    """Check the sweep as far as it can be checked off the cluster and say what to submit.

    Raises :class:`ConfigError` (exit 2) on bad input, before anything is sent.
    """
    from orchestrator.data.prepare import prepare
    from orchestrator.run.budget import parse_duration

    if args.timeout is not None:
        try:
            parse_duration(args.timeout)
        except ValueError as error:
            raise ConfigError("--timeout", args.timeout, str(error).split(" is not a duration; ")[-1]) from None
    raw = read_yaml_file(Path(sweep), "<sweep file>", "a sweep YAML file")
    folder = Path(sweep).resolve().parent
    storage = {**_DEFAULT_STORAGE, **((raw.get("storage") or {}) if isinstance(raw, dict) else {})}
    with _placeholders_for_unset(storage):
        config = load_sweep(sweep)
        check_job_storage(raw.get("storage") or {})
        check_files_travel(raw, folder)
        prepare(config)  # the model, the data, the training function: what `hpo validate` checks here
    metadata = {jobs.STUDY_KEY: config.name, jobs.SWEEP_KEY: Path(sweep).name,
                jobs.STUDY_DB_KEY: str(storage["study_db"])}  # passwords only by ${VAR} reference: the reference travels, never its value
    entrypoint = entrypoint_command(python, Path(sweep).name, args.words())
    runtime_env = {"working_dir": str(folder), "excludes": list(EXCLUDES), "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S)}}
    return config, JobPlan(config.name, Path(sweep).name, str(folder), entrypoint, metadata, runtime_env, python, tuple(args.words()))


def job_server_of(sweep: Path, option: str | None, option_field: str) -> str:
    """The job server to submit to, from ``--address``/``RAY_ADDRESS`` or the sweep's ``cluster.address``:
    read before the sweep is checked, so a missing address is reported at once."""
    raw = read_yaml_file(Path(sweep), "<sweep file>", "a sweep YAML file")
    cluster = raw.get("cluster") if isinstance(raw, dict) else None
    written = cluster.get("address") if isinstance(cluster, dict) else None
    return jobs.job_server_address(option, option_field, os.path.expandvars(written) if isinstance(written, str) else None)


def submit(plan: JobPlan, client, address: str, debug: bool = False) -> str:
    """Submit the planned job unless one of its study runs, once the head's Python has shown it can run
    hpo; return the job id. Returns at once."""
    running = jobs.running_job(client, plan.study)
    if running is not None:
        raise jobs.StudyJobRunningError(plan.study, running.submission_id, address)
    _refuse_if_study_held(plan)
    jobs.check_python(client, plan.python, address)
    jobs.quiet_ray(debug)  # the upload's loggers exist only now
    return client.submit_job(
        entrypoint=plan.entrypoint, submission_id=jobs.next_job_id(client, plan.study),
        metadata=plan.metadata, runtime_env=plan.runtime_env,
    )


def check_job_storage(storage: dict) -> None:
    """Where the job writes must outlive its temporary working directory: absolute paths on the head node or servers.
    A password must be a ``${VAR}`` reference: the sweep file itself travels with the job."""
    from sqlalchemy.engine import make_url

    for key in ("study_db", "mlflow"):
        written = storage.get(key)
        if written is not None and not all(jobs.ENV_REFERENCE.fullmatch(secret) for secret in url_secrets(str(written))):
            raise ConfigError(f"storage.{key}", str(written),
                              "the sweep file travels with the job, and a password written in it with it; write ${PGPASSWORD} "
                              "there and set PGPASSWORD in the head node's environment (see the README, Submit and walk away)")
        url = os.path.expandvars(str(written)) if written is not None else _DEFAULT_STORAGE[key]
        try:
            parsed = make_url(url)
        except Exception:  # noqa: BLE001 - an MLflow server URL, or a form `hpo run` reports on the cluster
            continue
        database = parsed.database or ""
        if parsed.get_backend_name() == "sqlite" and not (database.startswith("file:") or os.path.isabs(database)):
            raise ConfigError(
                f"storage.{key}", MISSING if written is None else str(written),
                f"{_WHERE}, so a relative SQLite file would be lost with it; give an absolute path on the head node, "
                f"e.g. sqlite:////srv/hpo/{Path(database or key).name}, or a database server",
            )
    results_dir = storage.get("results_dir")
    expanded = os.path.expandvars(str(results_dir)) if results_dir is not None else None
    if expanded is None or not ("://" in expanded or os.path.isabs(os.path.expanduser(expanded))):
        raise ConfigError(
            "storage.results_dir", MISSING if results_dir is None else results_dir,
            f"{_WHERE}, so a relative folder would be lost with it; give an absolute folder on the cluster, e.g. /results, or s3://bucket/hpo",
        )


def check_files_travel(raw: dict, folder: Path) -> None:
    """Each file the sweep names by a relative path must lie in the sweep file's folder, which the job uploads."""
    trial = raw["trial"] if isinstance(raw.get("trial"), dict) else {}
    data = raw["data"] if isinstance(raw.get("data"), dict) else {}
    function = trial.get("function")
    candidates = {
        "search_space": raw.get("search_space"),
        "trial.function": function.rpartition(":")[0] if isinstance(function, str) and ".py:" in function else None,
        "model": raw.get("model"),
        **{f"data.{key}": data.get(key) for key in ("source", "validation", "test")},
    }
    for name, value in candidates.items():
        if not isinstance(value, str) or is_bundled(value) or "://" in value or os.path.isabs(os.path.expanduser(value)):
            continue
        path = Path(os.path.normpath(folder / value))
        if path.exists() and folder not in path.parents:
            raise ConfigError(
                name, value,
                f"a job uploads the sweep file's folder ({folder}) as its working directory and this lies outside it; "
                "move the file into that folder, or give an absolute path that exists on the cluster's nodes",
            )


def _refuse_if_study_held(plan: JobPlan) -> None:
    """The study lease, when this machine can read the study database: another `hpo run` may hold it."""
    url = plan.metadata.get(jobs.STUDY_DB_KEY)
    if not url or "$" in os.path.expandvars(url):
        return
    url = os.path.expandvars(url)
    import sqlalchemy

    from orchestrator.errors import StudyLockedError
    from orchestrator.storage.lease import StudyLease
    from orchestrator.storage.study import sqlite_file

    path = sqlite_file(url)
    if path is None or not path.is_file():
        return  # a server may only be reachable from the cluster; the job's own lease check still holds
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        holder = StudyLease(engine, plan.study, holder="hpo-submit").held_by_another()
    finally:
        engine.dispose()
    if holder is not None:
        raise StudyLockedError(plan.study, holder)


@contextlib.contextmanager
def _placeholders_for_unset(storage: dict) -> Iterator[None]:
    """Let the sweep parse here although ``${VAR}``s meant for the cluster are not set on this machine."""
    names = {name for value in storage.values() if isinstance(value, str) for name in jobs.variables(value)}
    unset = [name for name in names if name not in os.environ]
    for name in unset:
        os.environ[name] = f"unset-{name.lower()}"
    try:
        yield
    finally:
        for name in unset:
            os.environ.pop(name, None)
