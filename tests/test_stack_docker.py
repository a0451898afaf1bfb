"""The team stack, for real: docker-compose.yml with docker-compose.cpu.yml built and started by a
Docker engine (a Ray head, two CPU Ray workers, PostgreSQL, an MLflow server), driven from the host
as the README's "The team stack" says. Run them alone with ``pytest -m stack``.

One stack serves the module (starting it costs the most): a sweep submitted from the host runs on
both worker containers; the one-shot ``hpo`` service runs more trials while a worker container is
killed; the head container is restarted under a submitted sweep, which is then resubmitted; last,
the password is looked for in every image, log and job record. Where no Docker engine answers these
tests skip with one line saying why; with HPO_REQUIRE_DOCKER=1 (CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter

import pytest

from tests.compose_stack import ROOT, STUDY, WORKERS, ComposeStack, docker_unavailable

pytestmark = [pytest.mark.stack, pytest.mark.slow]

N_TRIALS = 4  # sweeps/compose-cpu.yaml's budget.n_trials


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    why = docker_unavailable()
    if why is not None:
        if os.environ.get("HPO_REQUIRE_DOCKER"):
            pytest.fail(f"HPO_REQUIRE_DOCKER is set but {why}")
        pytest.skip(f"the compose stack needs Docker: {why}")
    stack = ComposeStack(tmp_path_factory.mktemp("stack"))
    try:
        stack.build()
        stack.up(timeout=600)
        yield stack
    finally:
        artifacts = os.environ.get("HPO_TEST_ARTIFACTS")
        if artifacts:  # what CI keeps of a run: every service's log
            os.makedirs(artifacts, exist_ok=True)
            with open(os.path.join(artifacts, "stack-logs.txt"), "w") as handle:
                handle.write(stack.logs().replace(stack.password, "***"))
        stack.down()


def ledger(stack: ComposeStack) -> list[dict]:
    import sqlalchemy as sa

    engine = sa.create_engine(stack.study_db, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("hpo_trials"):  # no sweep has opened the study yet
                return []
            rows = connection.execute(sa.text(
                "SELECT optuna_trial_number AS number, state, node, restarts, mlflow_run_id FROM hpo_trials "
                "WHERE study_name = :study ORDER BY optuna_trial_number"), {"study": STUDY}).mappings()
            return [dict(row) for row in rows]
    finally:
        engine.dispose()


def optuna_trials(stack: ComposeStack):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=STUDY, storage=stack.study_db).get_trials(deepcopy=False)


def mlflow_runs(stack: ComposeStack) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow_url)
    experiment = client.get_experiment_by_name(STUDY)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def trial_runs(stack: ComposeStack) -> list:
    return [run for run in mlflow_runs(stack) if "mlflow.parentRunId" in run.data.tags]


def nothing_left_running(stack: ComposeStack) -> None:
    """No trial RUNNING in Optuna, in the ledger or in MLflow; no run of the study left open."""
    assert not [t.number for t in optuna_trials(stack) if t.state.name == "RUNNING"]
    assert not [row["number"] for row in ledger(stack) if row["state"] == "RUNNING"]
    assert not [run.info.run_name for run in mlflow_runs(stack) if run.info.status == "RUNNING"]


def test_a_sweep_submitted_from_the_host_runs_on_both_worker_containers(stack, tmp_path):
    job_id = stack.submit()
    assert job_id == f"hpo-{STUDY}-1"
    document = stack.wait_job(job_id, timeout=900)
    logs = stack.hpo("logs", job_id, "--address", stack.job_server).stdout
    assert document["job"]["status"] == "SUCCEEDED", (document, logs[-3000:])
    assert document["state"] == "finished" and document["study"]["trials"] == {"COMPLETE": N_TRIALS}

    # the study is in the stack's PostgreSQL; each trial's node is a worker container
    workers = {stack.hostname(worker): worker for worker in WORKERS}
    rows = ledger(stack)
    assert [row["state"] for row in rows] == ["COMPLETE"] * N_TRIALS
    assert {row["node"] for row in rows} == set(workers), (rows, workers)  # both workers ran trials, the head none
    assert [t.state.name for t in optuna_trials(stack)] == ["COMPLETE"] * N_TRIALS

    # the runs and the registered model are in the stack's MLflow server, read through its REST API
    from mlflow import MlflowClient

    children = trial_runs(stack)
    assert len(children) == N_TRIALS and {run.info.status for run in children} == {"FINISHED"}
    assert {run.data.tags["hpo.node"] for run in children} == set(workers)
    assert {run.info.run_id: run.data.tags["hpo.node"] for run in children} == {row["mlflow_run_id"]: row["node"] for row in rows}
    versions = MlflowClient(stack.mlflow_url).search_model_versions("name = 'tweets-minilm-cpu-sentiment'")
    assert len(versions) == 1 and versions[0].status == "READY"

    # hpo best and hpo report from the host, against the same stores
    best = stack.hpo("best", STUDY, "--db", stack.study_db, "--json")
    assert json.loads(best.stdout)[0]["number"] in range(N_TRIALS)
    report = tmp_path / "report.html"
    stack.hpo("report", STUDY, "--db", stack.study_db, "--out", str(report), "--mlflow-ui", stack.mlflow_url)
    assert report.stat().st_size > 10_000
    assert stack.job_status(job_id)["state"] == "finished"


def running_trial(container: str) -> bool:
    """Whether a Ray Tune trial runs in the container: Ray titles its actor's process ray::ImplicitFunc.__init__
    while it starts and ray::ImplicitFunc.train while it trains (ray::ImplicitFunc alone: an actor between trials)."""
    top = subprocess.run(["docker", "top", container, "-o", "pid,args"], capture_output=True, text=True, check=True).stdout
    return re.search(r"ray::ImplicitFunc\.(__init__|train)\b", top) is not None


def catch_a_running_trial(containers: dict[str, str], timeout: float) -> str:
    """The worker whose container runs a trial first, paused the moment it is seen so the trial cannot end
    while it is looked at (once its model is loaded, a trial of this small sweep can report both epochs
    and end within a second). Returns the worker, left paused."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker, container in containers.items():
            if not running_trial(container):
                continue
            subprocess.run(["docker", "pause", container], check=True, capture_output=True)
            caught = False
            try:
                caught = running_trial(container)
            finally:
                if not caught:  # it had just ended
                    subprocess.run(["docker", "unpause", container], check=True, capture_output=True)
            if caught:
                return worker
        time.sleep(0.5)
    raise AssertionError(f"no trial was seen running on a worker within {timeout:.0f}s")


def test_the_one_shot_service_loses_nothing_when_a_worker_container_is_killed(stack, tmp_path):
    """``docker-compose run --rm hpo`` runs two more trials; the worker container of one of them is
    killed while its trial runs: the trial restarts on the other worker (from its last checkpoint if
    it had reported an epoch) and the study ends with exactly two more trials, none left RUNNING
    anywhere."""
    before = len(ledger(stack))
    containers = {worker: stack.container(worker) for worker in WORKERS}
    log = tmp_path / "one-shot.log"
    name = f"{stack.project}_hpo_one_shot"
    with open(log, "w") as output_file:  # a file, not a pipe nobody reads while the trials run
        one_shot = subprocess.Popen(stack.compose_args("run", "--rm", "--name", name, "hpo", "--n-trials", "2"), cwd=ROOT,
                                    env=stack.compose_env(), stdout=output_file, stderr=subprocess.STDOUT, text=True)
    try:
        killed = catch_a_running_trial(containers, timeout=600)
        survivor = next(worker for worker in WORKERS if worker != killed)
        subprocess.run(["docker", "kill", containers[killed]], check=True, capture_output=True)
        one_shot.wait(timeout=900)
    finally:
        if one_shot.poll() is None:  # the compose client, and the container it started
            one_shot.kill()
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    output = log.read_text()
    assert one_shot.returncode == 0, output[-4000:]
    assert stack.password not in output

    rows = ledger(stack)
    assert len(rows) == before + 2 and [row["state"] for row in rows[before:]] == ["COMPLETE", "COMPLETE"]
    restarted = [row for row in rows[before:] if row["restarts"]]
    assert len(restarted) == 1, rows[before:]  # the trial of the killed worker, and no other
    moved, victim = restarted[0], restarted[0]["number"]
    assert moved["restarts"] == 1 and moved["node"] == stack.hostname(survivor)  # re-run on the surviving worker
    run = next(run for run in trial_runs(stack) if run.data.tags["hpo.optuna_trial_number"] == str(victim))
    assert run.info.status == "FINISHED" and run.data.tags["hpo.restarts"] == "1" and run.data.tags["hpo.node"] == moved["node"]
    nothing_left_running(stack)
    assert Counter(t.state.name for t in optuna_trials(stack)) == {"COMPLETE": before + 2}

    stack.compose("up", "-d", killed)  # back to two workers
    stack.wait_ready(timeout=300)


def test_a_restarted_head_fails_the_job_visibly_and_a_resubmission_loses_nothing(stack):
    before = len(ledger(stack))
    containers = {worker: stack.container(worker) for worker in WORKERS}
    job_id = stack.submit("--n-trials", "2")
    paused = catch_a_running_trial(containers, timeout=420)  # its trial cannot end before the head goes
    try:
        stack.compose("restart", "-t", "10", "ray-head", timeout=300)
    finally:
        subprocess.run(["docker", "unpause", containers[paused]], check=True, capture_output=True)
    stack.wait_ready(timeout=420)  # the workers lost their head, exited and were restarted into the new cluster

    # the job is gone with the head it ran on, and hpo status says so instead of showing it running
    gone = stack.hpo("status", job_id, "--address", stack.job_server, check=False)
    assert gone.returncode == 2 and "no such job" in gone.stderr, gone

    # what the job finished before its head went, and what it left open (at least the trial on the paused worker)
    left = optuna_trials(stack)[before:]
    finished = [t.number for t in left if t.state.name == "COMPLETE"]
    interrupted = {t.number: t.params for t in left if t.state.name == "RUNNING"}
    assert interrupted and len(finished) + len(interrupted) == len(left), [(t.number, t.state.name) for t in left]

    # resubmitted, the study continues: the interrupted trials are closed and their parameters run again
    again = stack.submit("--n-trials", "2", "--wait", "120")
    document = stack.wait_job(again, timeout=900)
    assert document["job"]["status"] == "SUCCEEDED", (document, stack.hpo("logs", again, "--address", stack.job_server).stdout[-3000:])
    trials = optuna_trials(stack)
    assert [trials[number].state.name for number in interrupted] == ["FAIL"] * len(interrupted)
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(completed) == before + len(finished) + 2  # the resubmission's two trials
    for number, params in interrupted.items():  # nothing lost: each interrupted configuration ran again to the end
        assert any(t.params == params and t.number > number for t in completed), number
    nothing_left_running(stack)


def test_the_password_is_in_no_image_log_or_job_record(stack):
    password = stack.password
    for image in ("hpo-orchestrator:0.1.0-cpu", "hpo-mlflow:3.17.2"):
        history = subprocess.run(["docker", "history", "--no-trunc", image], capture_output=True, text=True, check=True).stdout
        inspected = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True).stdout
        assert password not in history and password not in inspected, image
        # the build inputs (extra CA certificates, wheels) stayed in the build stage
        leftovers = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", image, "-c", "ls /tmp/build-inputs 2>/dev/null; ls /usr/local/share/ca-certificates 2>/dev/null"],
                                   capture_output=True, text=True)
        assert leftovers.stdout.strip() == "", (image, leftovers.stdout)
    assert password not in stack.logs()
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(stack.job_server).list_jobs()  # the submitted sweeps, and the one-shot service's driver
    submitted = [job.submission_id for job in jobs if job.submission_id and job.submission_id.startswith(f"hpo-{STUDY}-")]
    assert submitted, "no submitted sweep to look in: run this module's sweeps first"
    for job in jobs:
        record = json.dumps({"entrypoint": job.entrypoint, "metadata": job.metadata, "runtime_env": job.runtime_env, "message": job.message})
        assert password not in record
    for job_id in submitted:
        assert password not in stack.hpo("logs", job_id, "--address", stack.job_server).stdout

