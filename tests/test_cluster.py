"""Sweeps on real multi-node Ray clusters on this machine: fractional GPUs are packed onto GPU
nodes only, and `hpo run --ray-address` drives a cluster started by `ray start --head`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.api import load_sweep

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
from orchestrator.runner import RunOptions
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
print(json.dumps({"head": cluster.head_node.node_id, "gpu_nodes": [n.node_id for n in gpu_nodes], "states": result.trials_this_run}), flush=True)
cluster.shutdown()
"""


def test_fractional_gpu_trials_pack_two_per_gpu_on_gpu_nodes_only(write_sweep, tmp_path):
    path = write_sweep(name="packing", trial={"max_epochs": 4}, resources={"cpu": 0.5, "gpu": 0.5},
                       budget={"n_trials": 8, "max_concurrent": 8})
    log = tmp_path / "placements.jsonl"
    done = subprocess.run([sys.executable, "-c", PACKING_SCRIPT, str(path), str(log)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    cluster = json.loads(done.stdout.strip().splitlines()[-1])
    assert cluster["states"] == {"COMPLETE": 8}
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_hpo_run_drives_a_cluster_started_with_ray_start(write_sweep, tmp_path):
    """`ray start --head` in one process, `hpo run --ray-address` in another, as a team would."""
    import tempfile

    port = _free_port()
    ray_temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                             f"--temp-dir={ray_temp}", "--block"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while subprocess.run([RAY, "status", f"--address=127.0.0.1:{port}"], capture_output=True, env=env).returncode != 0:
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(1)
        path = write_sweep(name="on-cluster", trial={"max_epochs": 1}, budget={"n_trials": 2, "max_concurrent": 2})
        run = subprocess.run([HPO, "run", str(path), "--ray-address", f"127.0.0.1:{port}", "--json"],
                             capture_output=True, text=True, env=env, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        assert json.loads(run.stdout)["trials_this_run"] == {"COMPLETE": 2}
        config = load_sweep(path)
        trials = optuna.load_study(study_name="on-cluster", storage=config.storage.study_db).trials
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    finally:
        os.killpg(head.pid, 15)  # --block: stopping this process stops the head's Ray processes
        head.wait(timeout=60)
        shutil.rmtree(ray_temp, ignore_errors=True)
