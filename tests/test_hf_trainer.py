"""A Hugging Face Trainer script as the trial, through trials.hf.ReportCallback (examples/hf_trainer)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from orchestrator.api import run_sweep
from orchestrator.sweep.config import parse_sweep
from tests.conftest import mlflow_runs
from trials.hf import sweep_metrics

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hf_trainer"


def test_trainer_metric_names_become_the_sweeps():
    evaluation = {"eval_loss": 0.7, "eval_f1_macro": 0.5, "eval_accuracy": 0.6, "eval_runtime": 1.2,
                  "eval_samples_per_second": 40.0, "eval_steps_per_second": 3.0, "epoch": 1.0}
    assert sweep_metrics(evaluation) == {"val_loss": 0.7, "val_f1_macro": 0.5, "val_accuracy": 0.6}


@pytest.mark.slow
def test_a_trainer_script_runs_as_trials_and_reports_its_evaluations(ray_session, tmp_path, tiny_model, tiny_csv):
    raw = yaml.safe_load((EXAMPLE / "sweep.yaml").read_text())
    raw["search_space"].update(model=str(tiny_model), data=str(tiny_csv), label_column="label", train_size=48, val_size=24,
                               learning_rate={"type": "float", "low": 1e-3, "high": 5e-3, "log": True})
    raw.update(budget={"n_trials": 2, "max_concurrent": 2}, scheduler={"name": "fifo"},
               storage={"study_db": f"sqlite:///{tmp_path / 'study.db'}", "mlflow": f"sqlite:///{tmp_path / 'mlruns.db'}",
                        "results_dir": str(tmp_path / "runs")})
    config = parse_sweep(raw, EXAMPLE)
    result = run_sweep(config)

    trials = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 and result.trials_this_run == {"COMPLETE": 2}
    assert all(sorted(t.intermediate_values) == [1, 2] and 0 <= t.value <= 1 for t in trials)
    client, _, children = mlflow_runs(config)
    assert [run.info.status for run in children] == ["FINISHED"] * 2
    for run in children:
        assert {"val_loss", "val_accuracy", "val_f1_macro", "train_loss"} <= set(run.data.metrics)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
