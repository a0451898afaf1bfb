"""``hpo status``: a submitted sweep's job state beside what its study database says.

The job server says whether the driver runs; the study database says what it did (trials by
state, best so far, the trials running now) and whether some ``hpo run`` still holds the study
(its lease). A job that failed with an error of its own (the last error line of its output, which
the job server keeps) says that error; one that was stopped, or whose driver died without a word,
while no one holds the study is "stopped; resubmit to continue": resubmitting resumes the study as
``hpo run`` does after a kill.
"""

from __future__ import annotations

import os
from collections import Counter

from orchestrator.errors import ConfigError
from orchestrator.jobs import job_server as jobs
from orchestrator.secrets import mask, remember_url

RESUBMIT = "stopped; resubmit to continue"


def job_summary(job) -> dict:
    metadata = job.metadata or {}
    return {
        "id": job.submission_id,
        "study": metadata.get(jobs.STUDY_KEY),
        "status": jobs.status_of(job),
        "driver_exit_code": getattr(job, "driver_exit_code", None),
        "message": (job.message or "").strip().splitlines()[0] if job.message else None,
        "reason": mask(reason) if (reason := jobs.failure_reason(job.message) if jobs.status_of(job) == "FAILED" else None) else None,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "entrypoint": job.entrypoint,
    }


def resolve(client, target: str | None, address: str):
    """The job ``target`` names: a job id, or a study (its latest job); None lists every hpo job."""
    if target is None:
        return None
    for job in client.list_jobs():
        if job.submission_id == target:
            return job
    of_study = jobs.study_jobs(client, target)
    if of_study:
        return of_study[-1]
    known = sorted({job["study"] for job in map(job_summary, jobs.study_jobs(client))}) or ["none"]
    raise ConfigError("STUDY|JOB_ID", target, f"no such job or study among the hpo jobs on {address} (studies: {', '.join(known)}); hpo status lists them")


def study_state(study_db: str | None, study: str) -> dict:
    """Trials by state, best so far, running trials and the lease, read from the study database."""
    if not study_db:
        return {"readable": False, "why": "the job names no study database without a password; pass --db URL"}
    unset = [name for name in jobs.variables(study_db) if name not in os.environ]
    if unset:
        return {"readable": False, "why": f"the study database URL names {', '.join(unset)}, not set here; export it or pass --db URL"}
    expanded = os.path.expandvars(study_db)
    remember_url(expanded)
    from optuna.trial import TrialState

    from orchestrator.reports import queries
    from orchestrator.storage.study import sqlite_file

    database_file = sqlite_file(expanded)
    if database_file is not None and not database_file.is_file():
        return {"readable": False, "why": f"{mask(expanded)} does not exist (yet): the job creates it when its run starts; or pass --db URL"}
    try:
        storage = queries.open_for_reading(expanded)
    except ConfigError as error:
        return {"readable": False, "why": mask(str(error))}
    try:
        study_obj = queries.load_study(storage, study)
        trials = study_obj.get_trials(deepcopy=False)
        rows = queries.best(storage, study, top=1)
    except ConfigError as error:
        return {"readable": False, "why": mask(str(error))}
    except KeyError:  # the job is creating the study right now
        return {"readable": False, "why": f"study {study!r} is being created; try again in a moment"}
    finally:
        storage.engine.dispose()  # hold no connection to a database a sweep is writing
    best = rows[0] if rows else None
    running = [queries.trial_row(t) for t in trials if t.state == TrialState.RUNNING]
    return {
        "readable": True,
        "trials": dict(Counter(t.state.name for t in trials)),
        "best": None if best is None else {"number": best["number"], "value": best["value"], "params": best["params"]},
        "running": [{"number": r["number"], "params": r["params"], "started": r["started"]} for r in running],
        "lease": live_lease(expanded, study),
    }


def live_lease(url: str, study: str) -> dict | None:
    import sqlalchemy

    from orchestrator.storage.lease import StudyLease

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        holder = StudyLease(engine, study, holder="hpo-status").held_by_another()
    finally:
        engine.dispose()
    return None if holder is None else {"host": holder["host"], "pid": holder["pid"], "expires_at": holder["expires_at"]}


def state_line(job: dict, study: dict) -> str:
    """One phrase: what the job is doing, or what to do about it."""
    status = job["status"]
    if status in jobs.ACTIVE:
        return status.lower()
    held = study.get("lease") if study.get("readable") else None
    if held:
        return f"the job ended ({status}) but pid {held['pid']} on {held['host']} still holds the study; wait for its lease to expire"
    if status == "SUCCEEDED":
        return "finished"
    code, reason = job.get("driver_exit_code"), job.get("reason")
    if code == 2:
        said = f": {reason}; fix it and resubmit" if reason else f"; see hpo logs {job['id']}, fix it and resubmit"
        return f"failed: hpo run refused its input on the cluster (exit 2){said}"
    if code == 3:
        return "failed: another hpo run held the study (exit 3); resubmit when it is done"
    if status == "FAILED" and reason:  # the job's own error (a head whose Python lacks hpo, a crash): resubmitting alone would repeat it
        return f"failed: {reason}; fix that and resubmit (hpo logs {job['id']} shows the job's output)"
    return RESUBMIT  # stopped, or its driver died without a word: the study resumes where it was


def status_document(client, target: str | None, address: str, db: str | None) -> dict:
    job = resolve(client, target, address)
    if job is None:
        return {"ok": True, "address": address, "jobs": [job_summary(j) for j in jobs.study_jobs(client)]}
    summary = job_summary(job)
    if summary["study"] is None:
        return {"ok": True, "address": address, "job": summary, "state": summary["status"].lower(), "study": {"readable": False, "why": "not a job hpo submitted"}}
    study = study_state(db or (job.metadata or {}).get(jobs.STUDY_DB_KEY), summary["study"])
    return {"ok": True, "address": address, "job": summary, "state": state_line(summary, study), "study": study}
