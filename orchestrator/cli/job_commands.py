"""``hpo submit``, ``status``, ``logs`` and ``stop``: sweeps run as Ray jobs on a cluster (the work is
in :mod:`orchestrator.cli.jobs`)."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.cli.app import DebugOpt, JsonOpt, SweepArg, app, quiet_libraries
from orchestrator.cli.console import one_line_errors
from orchestrator.secrets import remember_url

JobAddressOpt = typer.Option(
    None, "--address", envvar="RAY_ADDRESS",
    help="The Ray head's job server, http://HEAD:8265 (default: RAY_ADDRESS when it is such an address, else the sweep's cluster.address). Env: RAY_ADDRESS.",
)
JobIdArg = typer.Argument(..., help="The job's id, hpo-STUDY-N (printed by hpo submit; hpo status lists them).")


def _job_address(context: typer.Context, address: str | None) -> tuple[str | None, str]:
    from orchestrator.cli.jobs import address_or_none

    source = context.get_parameter_source("address")
    return address_or_none(address, getattr(source, "name", None) == "ENVIRONMENT")


@app.command()
def submit(
    context: typer.Context,
    sweep: Path = SweepArg,
    *,
    address: str | None = JobAddressOpt,
    n_trials: int | None = typer.Option(None, "--n-trials", min=1, help="Run this many more trials (default: budget.n_trials)."),
    total_trials: int | None = typer.Option(None, "--total-trials", min=1, help="Stop once the study has this many finished trials."),
    timeout: str | None = typer.Option(None, "--timeout", help="Wall-clock budget of the run, e.g. 45m or 6h."),
    wait: float = typer.Option(0.0, "--wait", min=0, help="On the cluster, wait up to this many seconds for another hpo run of the study to finish."),
    new_study: bool = typer.Option(False, "--new-study", help="Start the next versioned study (NAME-v2, ...) instead of continuing NAME."),
    python: str = typer.Option("python", "--python", help="The head node's Python that has hpo installed (the image's python; in a clone, the path of .venv/bin/python)."),
    emit: str | None = typer.Option(None, "--emit", help="rayjob: print a KubeRay RayJob manifest (with a ConfigMap holding the sweep) for kubectl apply -f, instead of submitting."),
    image: str | None = typer.Option(None, "--image", help="With --emit rayjob: the image of docker/Dockerfile as pushed to your registry (default hpo-orchestrator:0.1.0, docker-compose.yml's tag)."),
    secret: str | None = typer.Option(None, "--secret", help="With --emit rayjob: the Kubernetes Secret holding each ${VAR} the sweep's storage URLs name, under the variable's name (default hpo-db)."),
    debug: bool = DebugOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Check a sweep here, then run it as a Ray job on the cluster (hpo run on the head node) and return at once.

    The job's working directory is the sweep file's folder, so the files it names must lie there; the study database, MLflow and results_dir must be absolute paths on the head node or servers. ${VAR}s are expanded on the head node from its environment: their values are never sent. Prints the job id (hpo-STUDY-N) and how to follow it.

    Before submitting, a short probe job checks that the head's --python can import hpo.

    Exit codes: 0 submitted; 2 invalid input (or a head whose --python lacks hpo), nothing submitted; 3 a job (or an hpo run) of the study is running.
    """
    from orchestrator.cli.jobs import emit_command, submit_command
    from orchestrator.errors import ConfigError
    from orchestrator.jobs.submit import RunArgs

    with one_line_errors(debug, as_json):
        quiet_libraries(debug)
        args = RunArgs(n_trials=n_trials, total_trials=total_trials, timeout=timeout, wait_s=wait, new_study=new_study, debug=debug)
        if emit is not None:
            if emit != "rayjob":
                raise ConfigError("--emit", emit, "the one manifest hpo writes is rayjob (a KubeRay RayJob): --emit rayjob")
            emit_command(sweep, args, python, image, secret)
            return
        submit_command(sweep, *_job_address(context, address), args=args, python=python, as_json=as_json, debug=debug)


@app.command()
def status(
    context: typer.Context,
    target: str | None = typer.Argument(None, help="A job id (hpo-STUDY-N) or a study name (its latest job); none lists every hpo job."),
    *,
    address: str | None = JobAddressOpt,
    db: str | None = typer.Option(None, "--db", callback=remember_url, help="Study database URL, when the job's own (its sweep's storage.study_db) cannot be read from here."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """A submitted sweep: the job's state and, from the study database, trials by state, the best so far and the running trials.

    A job that failed with an error of its own says that error; one that was stopped, or whose driver died, while no hpo run holds the study says "stopped; resubmit to continue".
    """
    from orchestrator.cli.jobs import status_command

    with one_line_errors(debug, as_json):
        quiet_libraries(debug)
        status_command(target, *_job_address(context, address), db=db, as_json=as_json, debug=debug)


@app.command()
def logs(
    context: typer.Context,
    job_id: str = JobIdArg,
    *,
    address: str | None = JobAddressOpt,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing as the job writes, until it ends."),
    debug: bool = DebugOpt,
) -> None:
    """Print a submitted sweep's progress lines (the output of hpo run on the head node)."""
    from orchestrator.cli.jobs import logs_command

    with one_line_errors(debug, False):
        quiet_libraries(debug)
        logs_command(job_id, *_job_address(context, address), follow, debug)


@app.command()
def stop(
    context: typer.Context,
    job_id: str = JobIdArg,
    *,
    address: str | None = JobAddressOpt,
    wait: float = typer.Option(150.0, "--wait", min=0, help="Wait up to this many seconds for the job to finish stopping (0: return at once)."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Stop a submitted sweep gracefully, as SIGTERM stops hpo run: running trials recorded, their parameters queued again.

    Resubmit the same sweep file to continue the study.
    """
    from orchestrator.cli.jobs import stop_command

    with one_line_errors(debug, as_json):
        quiet_libraries(debug)
        stop_command(job_id, *_job_address(context, address), wait_s=wait, as_json=as_json, debug=debug)
