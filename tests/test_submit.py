"""`hpo submit`, `status`, `logs`, `stop` against a real Ray head (`ray start --head`, token auth, its job
server on a free port), with a cheap training function of our own; and `--emit rayjob` against the
fields KubeRay's RayJob API documents."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from orchestrator.cli import app

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
HEAD_SECRET = f"head-only-{secrets.token_hex(8)}"  # a password only the head node's environment holds

TRAIN = '''
import time
from trials import report

def main(config):
    for epoch in range(1, config["epochs"] + 1):
        time.sleep(config["pause"])
        report.epoch({"score": -(config["x"] - 0.3) ** 2 + 0.01 * epoch})
'''


def _env(**extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "MLFLOW_DISABLE_TELEMETRY": "true", **extra}
    env.pop("RAY_ADDRESS", None)
    env.pop("HPO_TEST_PGPASSWORD", None)  # the submitting machine does not know the head's password
    return env


def _free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@pytest.fixture(scope="session")
def job_server():
    """A Ray head with its job server (`ray[default]`), started as a team would, on free ports; stopped after."""
    from orchestrator.jobs.job_server import connect

    gcs, dashboard, agent_http, agent_grpc, runtime_env, metrics, client = _free_ports(7)
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={gcs}", "--num-cpus=2", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}", f"--ray-client-server-port={client}",
         f"--temp-dir={temp_dir}", "--disable-usage-stats", "--block"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**_env(), "HPO_TEST_PGPASSWORD": HEAD_SECRET},  # how a secret reaches the head: its own environment
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while True:
        try:
            connect(address).list_jobs()
            break
        except Exception:  # noqa: BLE001 - not up yet
            assert head.poll() is None, f"ray head exited: {head.stdout.read()[-2000:]}"
            assert time.monotonic() < deadline, "the job server did not come up"
            time.sleep(1)
    yield address
    os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops its node's processes
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def workdir():
    """A folder of our own, not pytest's tmp_path: pytest sessions running beside this one (as the same user)
    delete all but the newest three of their base folders, which would pull a running job's database away."""
    folder = Path(tempfile.mkdtemp(prefix="hpo-submit-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def flow_db(request, workdir) -> tuple[str, str]:
    """(the study database as the sweep file writes it, as this test reaches it): PostgreSQL with the password as
    ``${HPO_TEST_PGPASSWORD}``, a variable only the head node has; a SQLite file when no PostgreSQL runs here."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(request.getfixturevalue("postgres_url"))
    except pytest.skip.Exception:
        path = workdir / "store" / "study.db"
        return f"sqlite:///{path}", f"sqlite:///{path}"
    template = f"postgresql+psycopg://{url.username}:${{HPO_TEST_PGPASSWORD}}@{url.host}:{url.port}/{url.database}"
    return template, url.set(password=HEAD_SECRET).render_as_string(hide_password=False)


WITH_PASSWORD = {"HPO_TEST_PGPASSWORD": HEAD_SECRET}  # where someone reads the study from their own machine


def hpo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in this process (its imports are paid once), without RAY_ADDRESS; stdout and stderr apart."""
    environment = {"RAY_ADDRESS": None, "HPO_TEST_PGPASSWORD": None, **(env or {})}
    result = CliRunner().invoke(app, list(args), env=environment)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def _sweep(tmp_path: Path, name: str, study_db: str | None = None, **overrides) -> Path:
    """A function sweep in a folder of its own (uploaded as the job's working directory); storage elsewhere, absolute."""
    folder, store = tmp_path / "sweep", tmp_path / "store"
    folder.mkdir(exist_ok=True)
    store.mkdir(exist_ok=True)
    (folder / "train.py").write_text(TRAIN)
    sweep = {
        "name": name,
        "objective": {"metric": "score", "mode": "max"},
        "trial": {"function": "train.py:main", "max_epochs": 4, "max_failures": 0},
        "search_space": {"x": {"type": "float", "low": -2.0, "high": 2.0}, "epochs": 4, "pause": 1.0},
        "budget": {"n_trials": 40, "max_concurrent": 2},  # minutes of work: it runs until stopped
        "sampler": {"name": "random", "seed": 0},
        "storage": {"study_db": study_db or f"sqlite:///{store / 'study.db'}", "mlflow": f"sqlite:///{store / 'mlruns.db'}",
                    "results_dir": str(store / "runs")},
        **overrides,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def _status(job_id: str, address: str, *extra: str) -> dict:
    done = hpo("status", job_id, "--address", address, "--json", *extra, env=WITH_PASSWORD)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _wait_for(check, what: str, timeout: float = 150):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _client(address: str):
    from orchestrator.jobs.job_server import connect

    return connect(address)


def _assert_stores_clean(sweep: Path, study: str, study_db: str) -> list:
    """Nothing RUNNING in the study, the ledger or MLflow; no lease left; the invocation recorded as interrupted."""
    from mlflow import MlflowClient

    raw = yaml.safe_load(sweep.read_text())["storage"]
    trials = optuna.load_study(study_name=study, storage=study_db).trials
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    engine = sa.create_engine(study_db)
    with engine.connect() as connection:
        named = {"study": study}
        assert connection.execute(sa.text("SELECT count(*) FROM hpo_trials WHERE state = 'RUNNING' AND study_name = :study"), named).scalar() == 0
        assert connection.execute(sa.text("SELECT count(*) FROM hpo_leases WHERE study_name = :study"), named).scalar() == 0
        invocations = connection.execute(sa.text("SELECT i.exit_status, i.reason FROM hpo_invocations i JOIN hpo_sweeps s ON i.sweep_id = s.id "
                                                 "WHERE s.name = :study"), named).all()
    engine.dispose()
    assert [row[0] for row in invocations] == ["interrupted"] and "SIGTERM" in invocations[0][1]
    client = MlflowClient(raw["mlflow"])
    runs = client.search_runs([client.get_experiment_by_name(study).experiment_id])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["KILLED"]
    return trials


@pytest.mark.slow
def test_submit_status_logs_stop_then_resubmit_continues(job_server, workdir, flow_db):
    template, study_db = flow_db
    sweep = _sweep(workdir, "walk-away", study_db=template)
    started = time.monotonic()
    submitted = hpo("submit", str(sweep), "--address", job_server, "--python", sys.executable, "--json")
    assert submitted.returncode == 0, submitted.stderr
    answer = json.loads(submitted.stdout)
    job_id = answer["job_id"]
    assert job_id == "hpo-walk-away-1" and f"hpo logs {job_id} --follow" in answer["follow"]["logs"]
    assert time.monotonic() - started < 60  # returned at once: it did not wait for the sweep

    info = _client(job_server).get_job_info(job_id)
    assert info.metadata["hpo.study"] == "walk-away" and info.runtime_env["working_dir"]
    assert info.metadata["hpo.study_db"] == template  # a ${VAR} reference travels; its value never does

    # A second submission while the job runs is refused before anything is sent, naming the job.
    again = hpo("submit", str(sweep), "--address", job_server, "--python", sys.executable)
    assert again.returncode == 3 and f"being run by job {job_id}" in again.stderr, again.stderr
    assert [j.submission_id for j in _client(job_server).list_jobs()].count("hpo-walk-away-2") == 0

    def trials_running_after_one_finished():
        document = _status(job_id, job_server)  # the CLI's --json document
        study = document["study"]
        return document if study.get("readable") and study["trials"].get("COMPLETE") and study["running"] else None

    document = _wait_for(trials_running_after_one_finished, "a finished trial and a running one")
    assert document["job"]["status"] == "RUNNING" and document["state"] == "running"
    assert document["study"]["best"]["number"] is not None and "x" in document["study"]["running"][0]["params"]
    shown = hpo("status", "walk-away", "--address", job_server, env=WITH_PASSWORD)  # by study name: its latest job
    assert shown.returncode == 0 and "trials:" in shown.stdout and "best so far: trial" in shown.stdout and "running: trial" in shown.stdout, shown.stdout

    logs = hpo("logs", job_id, "--address", job_server)
    assert logs.returncode == 0 and "COMPLETE" in logs.stdout and "score=" in logs.stdout, logs.stdout[-2000:]

    stopped = hpo("stop", job_id, "--address", job_server, "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["status"] == "STOPPED"
    final_logs = hpo("logs", job_id, "--address", job_server).stdout
    try:
        trials = _assert_stores_clean(sweep, "walk-away", study_db)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- the job's log:\n{final_logs[-4000:]}") from None
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert interrupted and all("SIGTERM" in t.user_attrs["state_reason"] for t in interrupted)
    assert any(t.state == TrialState.WAITING for t in trials)  # their parameters are queued for the next run
    after_stop = _status(job_id, job_server)
    assert after_stop["state"] == "stopped; resubmit to continue" and after_stop["study"]["lease"] is None
    assert "interrupted" in final_logs or "FAIL" in final_logs, final_logs[-2000:]

    complete_before = sum(t.state == TrialState.COMPLETE for t in trials)
    raw = yaml.safe_load(sweep.read_text())
    sweep.write_text(yaml.safe_dump({**raw, "cluster": {"address": job_server}}))  # --address's default; on the head, hpo run joins by RAY_ADDRESS
    resubmitted = hpo("submit", str(sweep), "--python", sys.executable, "--n-trials", "2", "--json")
    assert resubmitted.returncode == 0, resubmitted.stderr
    second = json.loads(resubmitted.stdout)["job_id"]
    assert second == "hpo-walk-away-2"
    followed = hpo("logs", second, "--address", job_server, "--follow")  # returns when the job ends
    assert followed.returncode == 0 and "COMPLETE" in followed.stdout
    finished = _status(second, job_server)
    assert finished["job"]["status"] == "SUCCEEDED" and finished["state"] == "finished", finished
    trials = optuna.load_study(study_name="walk-away", storage=study_db).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == complete_before + 2
    retried = [t for t in trials if t.user_attrs.get("retry_of") in {i.number for i in interrupted}]
    assert retried and all(t.state == TrialState.COMPLETE for t in retried)  # the interrupted parameters ran first
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    # The password lived only on the head: nothing sent or logged holds it, and where it is not set, status says so.
    client = _client(job_server)
    for job in (job_id, second):
        info = client.get_job_info(job)
        sent = json.dumps({"entrypoint": info.entrypoint, "metadata": info.metadata, "runtime_env": info.runtime_env})
        assert HEAD_SECRET not in sent and "unset-" not in sent and HEAD_SECRET not in client.get_job_logs(job)
    if "${" in template:
        blind = json.loads(hpo("status", second, "--json", env={"RAY_ADDRESS": job_server}).stdout)  # --address from RAY_ADDRESS
        assert not blind["study"]["readable"] and "HPO_TEST_PGPASSWORD" in blind["study"]["why"]


@pytest.mark.slow
@pytest.mark.parametrize("change, field, fix", [
    ({"storage": {"study_db": "sqlite:///hpo.db"}}, "storage.study_db", "give an absolute path on the head node"),
    ({"storage": None}, "storage.study_db", "relative SQLite file would be lost"),
    ({"search_space": "../space.yaml"}, "search_space", "lies outside it"),
    ({"search_space": {"x": {"type": "float", "low": 2.0, "high": -2.0}}}, "search_space.x", "invalid"),
    ({"trial": {"function": "missing.py:main"}}, "trial.function", "no such file"),
    ({"cluster": {"address": "auto"}}, "--address", "--address http://HEAD:8265"),
])
def test_bad_input_is_refused_before_anything_is_submitted(job_server, workdir, monkeypatch, change, field, fix):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = _sweep(workdir, "refused")
    (workdir / "space.yaml").write_text("x: {type: float, low: 0.0, high: 1.0}\n")
    raw = yaml.safe_load(sweep.read_text())
    for key, value in change.items():
        if value is None:
            raw.pop(key)
        elif key == "storage":
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    sweep.write_text(yaml.safe_dump(raw))
    before = len(_client(job_server).list_jobs())
    address = [] if field == "--address" else ["--address", job_server]
    done = CliRunner().invoke(app, ["submit", str(sweep), *address])  # in-process: the CLI's imports are paid once
    assert done.exit_code == 2, done.output
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {field}:") and fix in line, line
    assert len(_client(job_server).list_jobs()) == before
    assert not (workdir / "store" / "study.db").exists() and not (workdir / "store" / "runs").exists()


def _bare_python(workdir: Path) -> Path:
    """A head's `python` without hpo: the interpreter in isolated mode, which ignores the head's PYTHONPATH."""
    path = workdir / "bare-python"
    path.write_text(f"#!/bin/sh\nexec {shutil.which('python3') or sys.executable} -I \"$@\"\n")
    path.chmod(0o755)
    return path


def test_a_head_whose_python_lacks_hpo_is_refused_before_anything_is_submitted(job_server, workdir):
    sweep = _sweep(workdir, "bare-head")
    before = {job.submission_id for job in _client(job_server).list_jobs()}
    done = hpo("submit", str(sweep), "--address", job_server, "--python", str(_bare_python(workdir)))
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith("error: --python: ") and f"the head node's Python on {job_server} cannot run hpo" in line, line
    assert "No module named 'orchestrator'" in line and "--python /opt/hpo/.venv/bin/python" in line, line
    assert {job.submission_id for job in _client(job_server).list_jobs()} == before  # neither the sweep's job nor the probe stays
    assert not (workdir / "store" / "study.db").exists()


def test_status_reports_the_error_a_job_failed_with(job_server, workdir, monkeypatch):
    """A job that fails on its own error (here a head whose Python lost hpo after the probe) is not "resubmit to continue"."""
    import orchestrator.jobs.job_server

    monkeypatch.setattr(orchestrator.jobs.job_server, "check_python", lambda *args, **kwargs: None)
    sweep = _sweep(workdir, "lost-python")
    done = hpo("submit", str(sweep), "--address", job_server, "--python", str(_bare_python(workdir)), "--json")
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]
    _wait_for(lambda: _client(job_server).get_job_status(job_id).is_terminal(), "the job to fail", timeout=60)
    document = _status(job_id, job_server)
    assert document["job"]["status"] == "FAILED" and document["job"]["reason"] == "ModuleNotFoundError: No module named 'orchestrator'"
    assert document["state"] == f"failed: ModuleNotFoundError: No module named 'orchestrator'; fix that and resubmit (hpo logs {job_id} shows the job's output)"
    shown = hpo("status", job_id, "--address", job_server)
    assert "No module named 'orchestrator'" in shown.stdout and "resubmit to continue" not in shown.stdout, shown.stdout


@pytest.mark.parametrize("address", [None, "http://127.0.0.1:9"])  # none given; one where no job server answers
def test_the_job_server_is_checked_before_the_sweep(workdir, monkeypatch, address):
    import orchestrator.data.prepare

    monkeypatch.setattr(orchestrator.data.prepare, "prepare", lambda *args, **kwargs: pytest.fail("the sweep was checked first"))
    sweep = _sweep(workdir, "no-address")
    done = hpo("submit", str(sweep), *(["--address", address] if address else []))
    assert done.returncode == 2 and done.stderr.startswith("error: --address: "), done.stderr
    assert ("e.g. --address http://HEAD:8265" if address is None else "no Ray job server answers there") in done.stderr


def test_emit_rayjob_writes_the_fields_kuberay_documents(workdir, monkeypatch):
    """The manifest uses only RayJob / RayCluster fields of KubeRay's ray.io/v1 API, with the password by reference."""
    from orchestrator.jobs.rayjob import IMAGE

    monkeypatch.setenv("PGPASSWORD", "do-not-ship-me")
    (workdir / "sweep").mkdir()
    (workdir / "sweep" / "space.yaml").write_text("x: {type: float, low: -2.0, high: 2.0}\nepochs: 2\npause: 0.0\n")
    sweep = _sweep(workdir, "Nightly_Study", study_db="postgresql+psycopg://hpo:${PGPASSWORD}@db.internal:5432/studies",
                   search_space="space.yaml")
    raw = yaml.safe_load(sweep.read_text())
    raw["storage"]["mlflow"] = "http://mlflow.internal:5000"
    sweep.write_text(yaml.safe_dump(raw))
    done = CliRunner().invoke(app, ["submit", str(sweep), "--emit", "rayjob", "--n-trials", "16", "--timeout", "6h"])
    assert done.exit_code == 0, done.output
    assert "do-not-ship-me" not in done.stdout
    assert "&id" not in done.stdout and "*id" not in done.stdout  # plain YAML: no anchors, no aliases
    config_map, job = list(yaml.safe_load_all(done.stdout))

    # RayJobSpec and RayClusterSpec json names, ray-operator/apis/ray/v1 (KubeRay v1.x).
    rayjob_spec = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata", "clusterSelector",
                   "submitterConfig", "managedBy", "deletionStrategy", "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode",
                   "entrypointResources", "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
                   "shutdownAfterJobFinishes", "suspend", "schedule"}
    cluster_spec = {"rayVersion", "headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling", "autoscalerOptions",
                    "headServiceAnnotations", "suspend", "managedBy", "upgradeStrategy", "gcsFaultToleranceOptions"}
    head_spec = {"rayStartParams", "template", "serviceType", "enableIngress", "headService", "resources", "labels"}
    worker_spec = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template", "scaleStrategy",
                   "numOfHosts", "idleTimeoutSeconds", "suspend", "resources", "labels"}
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert set(spec) <= rayjob_spec and set(spec["rayClusterSpec"]) <= cluster_spec
    assert set(spec["rayClusterSpec"]["headGroupSpec"]) <= head_spec
    assert all(set(group) <= worker_spec for group in spec["rayClusterSpec"]["workerGroupSpecs"])
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0 and spec["backoffLimit"] >= 1
    assert spec["submissionMode"] == "K8sJobMode" and spec["suspend"] is False  # KubeRay's defaults, written out
    assert spec["rayClusterSpec"]["enableInTreeAutoscaling"] is False
    assert done.stderr.startswith("warning: storage.results_dir ") and "deleted with the cluster" in done.stderr  # a local folder
    assert isinstance(spec["runtimeEnvYAML"], str) and all(isinstance(v, str) for v in spec["metadata"].values())
    assert spec["metadata"]["hpo.study"] == "Nightly_Study" and job["metadata"]["name"] == "hpo-nightly-study"
    assert spec["entrypoint"].split()[:5] == ["python", "-m", "orchestrator.cli", "run", "/sweeps/sweep.yaml"]
    assert "--n-trials 16 --timeout 6h" in spec["entrypoint"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert IMAGE == compose["x-hpo-image"]["image"]  # the image docker/Dockerfile builds
    for template in (spec["rayClusterSpec"]["headGroupSpec"]["template"], spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]):
        container = template["spec"]["containers"][0]
        assert container["image"] == IMAGE
        assert container["env"] == [{"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "hpo-db", "key": "PGPASSWORD"}}}]
        mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounted["sweep"] == "/sweeps"
        assert template["spec"]["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["kind"] == "ConfigMap" and sorted(config_map["data"]) == ["space.yaml", "sweep.yaml", "train.py"]


@pytest.mark.parametrize("key, url", [
    ("study_db", "postgresql+psycopg://hpo:${PGPASSWORD}@127.0.0.1:5432/studies"),
    ("mlflow", "http://localhost:5000"),
])
def test_emit_rayjob_warns_of_stores_the_pods_cannot_reach(workdir, key, url):
    sweep = _sweep(workdir, "local-stores", study_db="postgresql+psycopg://hpo:${PGPASSWORD}@db.internal:5432/studies")
    raw = yaml.safe_load(sweep.read_text())
    storage = {**raw["storage"], "mlflow": "http://mlflow.internal:5000", "results_dir": "s3://bucket/hpo", key: url}
    sweep.write_text(yaml.safe_dump({**raw, "storage": storage}))
    done = CliRunner().invoke(app, ["submit", str(sweep), "--emit", "rayjob"])
    assert done.exit_code == 0, done.output
    host = "127.0.0.1" if key == "study_db" else "localhost"
    assert done.stderr.splitlines() == [line for line in done.stderr.splitlines() if line.startswith(f"warning: storage.{key} names host {host}")]
    assert len(done.stderr.splitlines()) == 1 and "inside a pod is the pod itself" in done.stderr
    assert list(yaml.safe_load_all(done.stdout))[1]["kind"] == "RayJob"


def test_emit_rayjob_refuses_a_sqlite_study_the_cluster_would_delete(workdir):
    sweep = _sweep(workdir, "local-files")
    raw = yaml.safe_load(sweep.read_text())
    sweep.write_text(yaml.safe_dump({**raw, "storage": {**raw["storage"], "study_db": "sqlite:////srv/hpo/hpo.db"}}))
    done = CliRunner().invoke(app, ["submit", str(sweep), "--emit", "rayjob"])
    assert done.exit_code == 2 and done.stdout == ""
    assert done.stderr.startswith("error: storage.study_db: 'sqlite:////srv/hpo/hpo.db' is invalid:") and "a RayJob's cluster is deleted when the job ends" in done.stderr


@pytest.mark.parametrize("status, code, lease, state", [
    ("RUNNING", None, None, "running"),
    ("STOPPED", None, None, "stopped; resubmit to continue"),
    ("FAILED", 1, None, "stopped; resubmit to continue"),  # the driver died (head restarted, crashed)
    ("FAILED", 2, None, "failed: hpo run refused its input on the cluster (exit 2); see hpo logs hpo-s-1, fix it and resubmit"),
    ("FAILED", 127, None, "failed: sh: 1: pyhton: not found; fix that and resubmit"),  # the job's own last error line
    ("FAILED", 1, {"pid": 7, "host": "head", "expires_at": 0}, "the job ended (FAILED) but pid 7 on head still holds the study"),
    ("SUCCEEDED", 0, None, "finished"),
])
def test_status_says_what_to_do_about_a_job(status, code, lease, state):
    from orchestrator.jobs.job_server import failure_reason
    from orchestrator.jobs.job_status import state_line

    message = "Job entrypoint command failed with exit code 127, last available logs (truncated to 20,000 chars):\nsh: 1: pyhton: not found\n"
    reason = failure_reason(message) if code == 127 else None
    line = state_line({"id": "hpo-s-1", "status": status, "driver_exit_code": code, "reason": reason}, {"readable": True, "lease": lease})
    assert line.startswith(state)


@pytest.mark.parametrize("output, reason", [
    ("Traceback (most recent call last):\n  File x\nModuleNotFoundError: No module named 'orchestrator'\n", "ModuleNotFoundError: No module named 'orchestrator'"),
    ("trial 3 COMPLETE\nerror: storage.study_db: 'x' is invalid: no such database\n\n", "error: storage.study_db: 'x' is invalid: no such database"),
    ("/bin/sh: 1: /opt/venv/bin/python: not found\n", "/bin/sh: 1: /opt/venv/bin/python: not found"),
    ("bash: pyhton: command not found\n", "bash: pyhton: command not found"),
    ("Running entrypoint for job hpo-s-1: python -m orchestrator.cli run sweep.yaml\n/usr/bin/python3: Error while finding module specification "
     "for 'orchestrator.cli' (ModuleNotFoundError: No module named 'orchestrator')\n", "ModuleNotFoundError: No module named 'orchestrator'"),
    ("trial 3 COMPLETE\nKilled\n", None),  # no error of its own: resubmitting continues the study
    (None, None),
])
def test_a_failed_jobs_reason_is_its_last_error_line(output, reason):
    from orchestrator.jobs.job_server import failure_reason

    assert failure_reason(output) == reason


@pytest.mark.parametrize("value, from_environment, expected", [
    ("http://head:8265", False, "http://head:8265"),
    ("http://head:8265", True, "http://head:8265"),
    ("auto", True, None),  # RAY_ADDRESS meant for hpo run: passed over, so cluster.address can answer
    ("head:6379", False, "head:6379"),  # an explicit --address is checked, and refused, by its form
])
def test_the_job_server_address_comes_from_option_environment_or_sweep(value, from_environment, expected):
    from orchestrator.cli.jobs import address_or_none
    from orchestrator.errors import ConfigError
    from orchestrator.jobs.job_server import job_server_address

    address, field = address_or_none(value, from_environment)
    assert address == expected and field == ("RAY_ADDRESS" if from_environment else "--address")
    if expected == "head:6379":
        with pytest.raises(ConfigError, match=r"^--address: 'head:6379' is invalid: not a job server address"):
            job_server_address(address, field)
    elif expected is None:
        assert job_server_address(address, field, "http://head:8265/") == "http://head:8265"
        with pytest.raises(ConfigError, match=r"^--address: .*e.g. --address http://HEAD:8265"):
            job_server_address(address, field, "auto")
