"""Trials whose worker dies are restarted by Ray from their last checkpoint (up to
``trial.max_failures``); an out-of-memory step is retried smaller; the ledger records both."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from optuna.trial import TrialState
from ray import cloudpickle

import trials.finetune
from orchestrator.api import load_sweep, run_sweep
from orchestrator.run.runner import RunOptions
from tests.conftest import IN_PROCESS_CLUSTER_ENV, mlflow_runs
from trials import checkpoint
from trials.entrypoint import run_trial
from trials.finetune import Hyperparameters, fine_tune

pytestmark = pytest.mark.slow

# Ray workers unpickle the trial functions below; they live in this test module, which workers
# cannot import, so they travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MARKERS = Path(tempfile.gettempdir()) / f"hpo-worker-failures-{uuid.uuid4().hex[:8]}"


def dies_once_after_epoch_2(config, settings, data):
    """The real trial, except that its worker process exits hard right after epoch 2 the first time."""
    from trials.report import ray_tune_report, restored_checkpoint

    with restored_checkpoint() as folder:
        resume = checkpoint.load(folder) if folder is not None else None
    (MARKERS / f"started-after-epoch-{resume['state']['epoch'] if resume else 0}").touch()

    def report(metrics, checkpoint_dir=None):
        ray_tune_report(metrics, checkpoint_dir)
        if metrics["epoch"] == 2 and not (MARKERS / "died").exists():
            (MARKERS / "died").touch()
            os._exit(1)  # like the OOM killer: no exception, no cleanup

    fine_tune(settings, Hyperparameters.from_mapping(config), data, report, resume=resume)


def runs_out_of_memory_above_4_rows(config, settings, data):
    real_forward = trials.finetune.forward_loss

    def forward(model, batch, loss_fn):
        if len(batch["labels"]) > 4:
            raise __import__("torch").OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real_forward(model, batch, loss_fn)

    trials.finetune.forward_loss = forward
    run_trial(config, settings, data)


def _ledger(config) -> list[dict]:
    engine = sa.create_engine(config.storage.study_db)
    with engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(sa.text("SELECT * FROM hpo_trials ORDER BY optuna_trial_number")).mappings()]
    engine.dispose()
    return rows


def test_a_trial_whose_worker_dies_resumes_from_its_checkpoint(ray_session, write_sweep):
    MARKERS.mkdir(parents=True, exist_ok=True)
    config = load_sweep(write_sweep(name="dies-once", trial={"max_epochs": 4, "max_failures": 1},
                                    budget={"n_trials": 1, "max_concurrent": 1}))
    result = run_sweep(config, RunOptions(trial_function=dies_once_after_epoch_2))

    assert result.trials_this_run == {"COMPLETE": 1}
    assert sorted(p.name for p in MARKERS.glob("started-*")) == ["started-after-epoch-0", "started-after-epoch-2"]
    [trial] = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
    assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == [1, 2, 3, 4]
    [row] = _ledger(config)
    assert (row["state"], row["restarts"]) == ("COMPLETE", 1)
    assert row["checkpoint_path"] and "checkpoint_" in row["checkpoint_path"]
    assert not list(Path(row["checkpoint_path"]).parent.glob("checkpoint_*"))  # freed once the trial ended
    [child] = mlflow_runs(config)[2]
    assert child.info.status == "FINISHED"
    assert child.data.tags["hpo.restarts"] == "1" and "died" in child.data.tags["hpo.last_restart_reason"].lower()


def test_a_trial_that_dies_more_often_than_max_failures_fails_with_the_reason(ray_session, write_sweep):
    config = load_sweep(write_sweep(name="dies-always", trial={"max_epochs": 2, "max_failures": 0},
                                    budget={"n_trials": 1, "max_concurrent": 1}))
    MARKERS.mkdir(parents=True, exist_ok=True)
    (MARKERS / "died").unlink(missing_ok=True)
    with pytest.raises(Exception, match="all 1 trials failed"):
        run_sweep(config, RunOptions(trial_function=dies_once_after_epoch_2))
    [trial] = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
    assert trial.state == TrialState.FAIL and "died" in trial.user_attrs["state_reason"].lower()
    assert _ledger(config)[0]["state"] == "FAIL"


def test_out_of_memory_in_a_trial_is_retried_smaller_and_recorded(ray_session, write_sweep):
    space = {"learning_rate": {"type": "float", "low": 4e-3, "high": 6e-3}, "batch_size": 16, "unfreeze_depth": 1, "dropout": 0.0}
    config = load_sweep(write_sweep(name="oom", search_space=space, trial={"max_epochs": 2},
                                    budget={"n_trials": 1, "max_concurrent": 1}))
    result = run_sweep(config, RunOptions(trial_function=runs_out_of_memory_above_4_rows))

    assert result.trials_this_run == {"COMPLETE": 1}
    [row] = _ledger(config)
    assert (row["state"], row["micro_batch_size"], row["restarts"]) == ("COMPLETE", 4, 0)
    [child] = mlflow_runs(config)[2]
    assert child.data.params["batch_size"] == "16" and child.data.tags["hpo.micro_batch_size"] == "4"
    assert row["node"] == child.data.tags["hpo.node"] == platform.node()  # where its worker ran (here: this host)


NODE_LOSS_SCRIPT = r"""
import json, sys, threading, time
from pathlib import Path

import optuna
import ray
from ray.cluster_utils import Cluster

from orchestrator.api import load_sweep, run_sweep
from orchestrator.run.runner import RunOptions
from trials.entrypoint import run_trial

nodes_file = Path(sys.argv[2])

def trial_noting_its_node(config, settings, data):
    with open(nodes_file, "a") as handle:
        handle.write(ray.get_runtime_context().get_node_id() + "\n")
    run_trial(config, settings, data)

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head runs no trial
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
cluster.wait_for_nodes()
config = load_sweep(sys.argv[1])
config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"address": cluster.address})})

def remove_the_trials_node_mid_trial():
    while True:
        try:
            trials = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
            if nodes_file.exists() and any(t.state.name == "RUNNING" and len(t.intermediate_values) >= 2 for t in trials):
                break
        except Exception:
            pass
        time.sleep(0.2)
    node_id = nodes_file.read_text().split()[0]
    cluster.remove_node(next(node for node in workers if node.node_id == node_id))  # the trial's worker process goes with it
    print("node removed", flush=True)

threading.Thread(target=remove_the_trials_node_mid_trial, daemon=True).start()
result = run_sweep(config, RunOptions(trial_function=trial_noting_its_node))
print(json.dumps(result.trials_this_run), flush=True)
cluster.shutdown()
"""


def test_a_trial_on_a_lost_node_resumes_on_another(write_sweep):
    """A real multi-node Ray cluster on this machine; the node running the trial is removed mid-trial."""
    import subprocess

    # its node goes after epoch 2: the 14 epochs left keep the trial running well past the removal
    path = write_sweep(name="node-loss", trial={"max_epochs": 16, "max_failures": 2},
                       budget={"n_trials": 1, "max_concurrent": 1})
    config = load_sweep(path)
    nodes_file = path.parent / "nodes.txt"
    process = subprocess.run([sys.executable, "-c", NODE_LOSS_SCRIPT, str(path), str(nodes_file)], capture_output=True, text=True,
                             timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", **IN_PROCESS_CLUSTER_ENV}, cwd=Path(__file__).resolve().parent.parent)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "node removed" in process.stdout, process.stdout
    assert '{"COMPLETE": 1}' in process.stdout, process.stdout[-2000:]
    first_node, second_node = nodes_file.read_text().split()
    assert first_node != second_node  # restarted on the surviving node

    [trial] = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
    assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == list(range(1, 17))
    [row] = _ledger(config)
    assert (row["state"], row["restarts"]) == ("COMPLETE", 1)
    [child] = mlflow_runs(config)[2]
    epochs = [m.step for m in MlflowClient(config.storage.mlflow).get_metric_history(child.info.run_id, "val_f1_macro")]
    assert len(epochs) <= 17  # continued from its checkpoint: at most the epoch in flight ran twice
    assert child.info.status == "FINISHED" and child.data.tags["hpo.restarts"] == "1"


def test_a_trial_whose_worker_never_started_can_be_restarted(write_sweep):
    """Ray Tune may cancel a trial's worker before it starts (seen with reused actors on a
    multi-node cluster) and then restart the trial: the recorder has no MLflow run for it yet,
    and must record the restart instead of crashing the sweep."""
    from types import SimpleNamespace

    from orchestrator.run.recorder import TrialRecorder
    from orchestrator.search.searcher import StudySearcher
    from orchestrator.storage import db
    from orchestrator.storage.ledger import Ledger
    from orchestrator.sweep.sweep_sections import Resources
    from orchestrator.tracking.tracker import MlflowTracker

    config = load_sweep(write_sweep(name="never-started"))
    engine = db.create_engine(config.storage.study_db)
    db.upgrade(engine)
    study = optuna.create_study(study_name=config.name, storage=config.storage.study_db, direction="maximize")
    searcher = StudySearcher(study, config.search_space, config.objective.metric, config.objective.mode)
    recorder = TrialRecorder(searcher, MlflowTracker(config.storage.mlflow, config.name), "no-parent-run", metric=config.objective.metric,
                             mode=config.objective.mode, ledger=Ledger(engine, config.name), resources=Resources())
    searcher.suggest("t1")
    trial = SimpleNamespace(trial_id="t1", pickled_error_file=None, error_file=None)

    recorder.on_trial_recover(iteration=0, trials=[], trial=trial)

    assert recorder.trials["t1"].restarts == ["the trial's worker failed"]
    engine.dispose()
