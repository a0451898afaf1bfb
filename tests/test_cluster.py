"""Sweeps on real multi-node Ray clusters on this machine: fractional GPUs are packed onto GPU
nodes only, and `hpo run --ray-address` drives a cluster started by `ray start --head`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import IN_PROCESS_CLUSTER_ENV, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HPO = str(Path(sys.executable).parent / "hpo")
RAY = str(Path(sys.executable).parent / "ray")

PACKING_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
from orchestrator.api import load_sweep, run_sweep
from orchestrator.errors import ConfigError
from orchestrator.run.runner import RunOptions
from trials.entrypoint import run_trial

log = Path(sys.argv[2])

def trial_noting_where_it_ran(config, settings, data):
    context = ray.get_runtime_context()
    started = time.time()
    run_trial(config, settings, data)
    with open(log, "a") as handle:
        handle.write(json.dumps({"node": context.get_node_id(), "gpus": [str(g) for g in ray.get_gpu_ids()],
                                 "start": started, "end": time.time()}) + "\n")

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
gpu_nodes = [cluster.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]  # logical GPUs: torch stays on the CPU
cluster.wait_for_nodes()
config = load_sweep(sys.argv[1])
config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"address": cluster.address})})
result = run_sweep(config, RunOptions(trial_function=trial_noting_where_it_ran))
two_gpus = config.model_copy(update={"resources": config.resources.model_copy(update={"gpu": 2.0})})
try:
    run_sweep(two_gpus, RunOptions(trial_function=trial_noting_where_it_ran))
    refused = None
except ConfigError as error:  # two nodes with one GPU each: no trial could ever start
    refused = str(error)
print(json.dumps({"head": cluster.head_node.node_id, "gpu_nodes": [n.node_id for n in gpu_nodes], "states": result.trials_this_run,
                  "refused": refused}), flush=True)
cluster.shutdown()
"""


def test_fractional_gpu_trials_pack_two_per_gpu_on_gpu_nodes_only(write_sweep, tmp_path):
    path = write_sweep(name="packing", trial={"max_epochs": 2}, resources={"cpu": 0.5, "gpu": 0.5},
                       budget={"n_trials": 8, "max_concurrent": 8})
    log = tmp_path / "placements.jsonl"
    done = subprocess.run([sys.executable, "-c", PACKING_SCRIPT, str(path), str(log)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **IN_PROCESS_CLUSTER_ENV})
    assert done.returncode == 0, done.stderr[-3000:]
    cluster = json.loads(done.stdout.strip().splitlines()[-1])
    assert cluster["states"] == {"COMPLETE": 8}
    assert cluster["refused"].startswith("resources.gpu: 2.0 is invalid: no node of the Ray cluster has that much (the largest has 1.0)")
    placements = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(placements) == 8
    assert all(p["node"] in cluster["gpu_nodes"] for p in placements)  # the head (no GPU) ran none
    assert all(len(p["gpus"]) == 1 for p in placements)
    slots = {(p["node"], p["gpus"][0]) for p in placements}
    most_at_once = 0
    for node_gpu in slots:
        on_it = [p for p in placements if (p["node"], p["gpus"][0]) == node_gpu]
        for p in on_it:
            most_at_once = max(most_at_once, sum(q["start"] <= p["start"] < q["end"] for q in on_it))
    assert most_at_once == 2  # two trials shared a GPU, never three
    assert len(slots) == 2  # both GPUs were used


def _env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("RAY_ADDRESS", None)
    return env


def _wait(check, what: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None:
            raise AssertionError(f"{what} exited: {process.stdout.read()[-2000:] if process.stdout else ''}")
        assert time.monotonic() < deadline, f"{what} did not come up"
        time.sleep(1)


@contextlib.contextmanager
def _processes():
    """Start long-running processes (each in its own session); stop them all on the way out."""
    started: list[subprocess.Popen] = []

    def start(*command: str, **env: str) -> subprocess.Popen:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**_env(), **env}, start_new_session=True)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in reversed(started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # `ray start --block` stops its node's processes
        for process in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _head(start, port: int, temp_dir: str) -> subprocess.Popen:
    head = start(RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp_dir}", "--block")
    # (not `ray status`: in Ray 2.60 it does not send the cluster's auth token)
    _wait(lambda: _alive_nodes(port) >= 1, "ray head", head)
    return head


def _image_health_check(head_address: str) -> int:
    command = re.search(r'HEALTHCHECK[^\n]*\\\n\s*CMD (.+)', (ROOT / "docker" / "Dockerfile").read_text()).group(1)
    return subprocess.run(["sh", "-c", command.replace("python ", f"{sys.executable} ", 1)],
                          env={**_env(), "RAY_HEAD_ADDRESS": head_address}, capture_output=True, timeout=30).returncode


def test_the_compose_topology_as_local_processes(write_sweep, postgres_url, tmp_path):
    """docker-compose.yml's services, run as processes: PostgreSQL (study DB and MLflow's store),
    `mlflow server`, a Ray head and a Ray worker node started with `ray start` (as a team would),
    and `hpo run --ray-address`. The trials (each takes a node's 2 CPUs, so two at once run one per
    node) must land in PostgreSQL and be readable through the MLflow server's REST API; the Ray
    image's HEALTHCHECK passes against the token-auth head and fails against an address nothing
    serves. (The `ray start` checks share this cluster: starting one costs the most here.)"""
    import sqlalchemy as sa

    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    mlflow_db = f"mlflow_{os.getpid()}_{int(time.time())}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{mlflow_db}"'))
    mlflow_store = sa.engine.make_url(postgres_url).set(database=mlflow_db).render_as_string(hide_password=False)
    head_port, mlflow_port = free_port(), free_port()
    ray_temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        with _processes() as start:
            server = start(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                           "--backend-store-uri", mlflow_store, "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1")
            _head(start, head_port, ray_temp)
            # a worker joining by address sends the cluster's token only in token mode (Ray 2.60)
            worker = start(RAY, "start", f"--address=127.0.0.1:{head_port}", "--num-cpus=2", "--block", RAY_AUTH_MODE="token")
            _wait(lambda: _alive_nodes(head_port) == 2, "ray worker", worker)
            _wait(lambda: _http_ok(f"http://127.0.0.1:{mlflow_port}/health"), "mlflow server", server)

            path = write_sweep(name="topology", trial={"max_epochs": 1}, budget={"n_trials": 2, "max_concurrent": 2},
                               resources={"cpu": 2}, storage={"study_db": postgres_url, "mlflow": f"http://127.0.0.1:{mlflow_port}"})
            run = subprocess.run([HPO, "run", str(path), "--ray-address", f"127.0.0.1:{head_port}", "--json"],
                                 capture_output=True, text=True, env=_env(), timeout=600)
            assert run.returncode == 0, run.stderr[-3000:]
            assert json.loads(run.stdout)["trials_this_run"] == {"COMPLETE": 2}
            assert _image_health_check(f"127.0.0.1:{head_port}") == 0  # the Ray image's HEALTHCHECK, against a token-auth cluster
            assert _image_health_check(f"127.0.0.1:{free_port()}") != 0

            trials = optuna.load_study(study_name="topology", storage=postgres_url).trials
            assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
            runs = _post(f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=topology", None)
            found = _post(f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/runs/search",
                          {"experiment_ids": [runs["experiment"]["experiment_id"]], "max_results": 100})["runs"]
            children = [r for r in found if any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))]
            assert len(found) == 3 and len(children) == 2
            assert {r["info"]["status"] for r in found} == {"FINISHED"}
            assert sorted(next(t["value"] for t in r["data"]["tags"] if t["key"] == "hpo.optuna_trial_number") for r in children) == ["0", "1"]
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{mlflow_db}" WITH (FORCE)'))
        admin.dispose()


def _alive_nodes(port: int) -> int:
    done = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}', logging_level='ERROR'); "
                           "print(sum(n['Alive'] for n in ray.nodes()))"], capture_output=True, text=True, env={**_env(), "RAY_AUTH_MODE": "token"})
    return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else 0


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def _post(url: str, body: dict | None) -> dict:
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"}, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)
