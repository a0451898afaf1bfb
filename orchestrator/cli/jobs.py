"""What ``hpo submit``, ``status``, ``logs`` and ``stop`` print: the bodies of those commands.

:mod:`orchestrator.cli.job_commands` defines their options; the work is in :mod:`orchestrator.jobs.submit`,
:mod:`orchestrator.jobs.job_server`, :mod:`orchestrator.jobs.job_status` and :mod:`orchestrator.jobs.rayjob`.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from orchestrator.cli.console import err, out, print_json
from orchestrator.jobs import job_server as jobs
from orchestrator.secrets import mask


def address_or_none(value: str | None, from_environment: bool) -> tuple[str | None, str]:
    """(``--address``/``RAY_ADDRESS`` if it names a job server, its field). A ``RAY_ADDRESS`` meant for
    ``hpo run`` (auto, HOST:6379) is not a job server: it is passed over, so a sweep's cluster.address can answer."""
    field = "RAY_ADDRESS" if from_environment else "--address"
    if value and from_environment and not jobs.is_job_server_address(value):
        return None, field
    return value, field


def submit_command(sweep: Path, address: str | None, field: str, *, args, python: str, as_json: bool, debug: bool = False) -> None:
    from orchestrator.jobs.submit import job_server_of, plan_job, submit

    server = job_server_of(sweep, address, field)
    client = jobs.connect(server, debug)  # both before the sweep's checks, which take a while
    _, plan = plan_job(sweep, args, python)
    job_id = submit(plan, client, server, debug)
    follow = {"status": f"hpo status {job_id} --address {server}", "logs": f"hpo logs {job_id} --follow --address {server}",
              "stop": f"hpo stop {job_id} --address {server}"}
    if as_json:
        print_json({"ok": True, "job_id": job_id, "study": plan.study, "address": server, "entrypoint": plan.entrypoint, "follow": follow})
        return
    out.print(f"submitted {job_id}: study [bold]{plan.study}[/bold] on {server}", highlight=False)
    for what, command in follow.items():
        out.print(f"  {what:6} {command}", highlight=False, soft_wrap=True)


def emit_command(sweep: Path, args, python: str, image: str | None, secret: str | None) -> None:
    from orchestrator.jobs.rayjob import IMAGE, SECRET, manifests, to_yaml, unreachable_from_pods
    from orchestrator.jobs.submit import plan_job

    config, plan = plan_job(sweep, args, python)
    documents = manifests(config, plan, Path(sweep), image=image or IMAGE, secret=secret or SECRET)
    for warning in unreachable_from_pods(config):
        err.print(warning, highlight=False, soft_wrap=True)
    # Not masked: it holds no secret (plan_job refuses a password written in the sweep file), and masking
    # would turn the sweep's ${PGPASSWORD} references into ***.
    sys.stdout.write(to_yaml(documents))


def status_command(target: str | None, address: str | None, field: str, *, db: str | None, as_json: bool, debug: bool = False) -> None:
    from orchestrator.jobs.job_status import status_document

    server = jobs.job_server_address(address, field)
    document = status_document(jobs.connect(server, debug), target, server, db)
    if as_json:
        print_json(document)
        return
    if "jobs" in document:
        _print_jobs(document)
        return
    job, study = document["job"], document["study"]
    out.print(f"{job['id']}: study [bold]{job['study']}[/bold], job {job['status']}: {document['state']}", highlight=False)
    if job["message"] and job["status"] not in jobs.ACTIVE:
        out.print(f"  job: {mask(job['message'])}", highlight=False, soft_wrap=True)
    if not study["readable"]:
        err.print(f"note: the study database was not read: {study['why']}", highlight=False, soft_wrap=True)
        return
    states = ", ".join(f"{count} {state}" for state, count in sorted(study["trials"].items())) or "no trials yet"
    out.print(f"  trials: {states}", highlight=False)
    best = study["best"]
    if best:
        params = " ".join(f"{name}={_short(value)}" for name, value in best["params"].items())
        out.print(f"  best so far: trial {best['number']} = {best['value']:.4f} ({params})", highlight=False, soft_wrap=True)
    for row in study["running"]:
        params = " ".join(f"{name}={_short(value)}" for name, value in row["params"].items())
        out.print(f"  running: trial {row['number']} since {row['started']} ({params})", highlight=False, soft_wrap=True)


def _print_jobs(document: dict) -> None:
    from rich.table import Table

    table = Table(title=f"hpo jobs on {document['address']}", title_justify="left")
    for column in ("job", "study", "status", "started"):
        table.add_column(column, no_wrap=True)
    for job in document["jobs"]:
        started = dt.datetime.fromtimestamp(job["start_time"] / 1000).isoformat(timespec="seconds") if job["start_time"] else "-"
        table.add_row(job["id"], job["study"], job["status"], started)
    out.print(table)


def logs_command(job_id: str, address: str | None, field: str, follow: bool, debug: bool = False) -> None:
    server = jobs.job_server_address(address, field)
    client = jobs.connect(server, debug)
    jobs.find_job(client, job_id, server)
    if follow:
        jobs.follow_logs(client, job_id, lambda chunk: (sys.stdout.write(mask(chunk)), sys.stdout.flush()))
    else:
        sys.stdout.write(mask(client.get_job_logs(job_id)))


def stop_command(job_id: str, address: str | None, field: str, *, wait_s: float, as_json: bool, debug: bool = False) -> None:
    from orchestrator.jobs.submit import STOP_GRACE_S

    server = jobs.job_server_address(address, field)
    client = jobs.connect(server, debug)
    job = jobs.find_job(client, job_id, server)
    before = jobs.status_of(job)
    requested = before in jobs.ACTIVE and client.stop_job(job_id)
    status = jobs.wait_until_done(client, job_id, wait_s) if requested and wait_s else jobs.status_of(jobs.find_job(client, job_id, server))
    document = {"ok": True, "job_id": job_id, "was": before, "status": status, "stop_requested": bool(requested)}
    if as_json:
        print_json(document)
        return
    if not requested:
        out.print(f"{job_id} is not running ({before}); nothing to stop", highlight=False)
    elif status in jobs.ACTIVE:
        out.print(f"{job_id}: asked to stop; it records its running trials first (up to {STOP_GRACE_S}s); see hpo status {job_id}", highlight=False)
    else:
        out.print(f"{job_id}: {status}; running trials recorded and re-queued; resubmit the sweep to continue", highlight=False)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
