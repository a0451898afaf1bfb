"""Several objectives: the study searches for the Pareto front, stores every trial's values,
and `hpo best` shows the front."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from orchestrator.api import load_sweep, run_sweep
from orchestrator.cli import app
from orchestrator.errors import ConfigError
from orchestrator.run.outcome import classify
from orchestrator.sweep.config import parse_sweep
from tests.conftest import TINY_SPACE, mlflow_runs
from trials.result_keys import FINAL

TWO = [{"metric": "val_f1_macro", "mode": "max"}, {"metric": "trainable_params", "mode": "min"}]


@pytest.mark.parametrize("change, message", [
    ({"objectives": TWO, "scheduler": {"name": "asha"}}, r"^scheduler\.name: 'asha' is invalid: schedulers stop trials on one metric; with several objectives use fifo"),
    ({"objectives": TWO, "sampler": {"name": "cmaes"}}, r"^sampler\.name: 'cmaes' is invalid: CMA-ES optimises one objective"),
    ({"objectives": TWO, "objective": TWO[0]}, r"^objectives: .* give either objective \(one metric\) or objectives \(several\), not both"),
    ({"objectives": [TWO[0], TWO[0]]}, r"^objectives: .* each metric may appear once"),
    ({"objectives": [TWO[0], {"metric": "val_noisy_accuracy", "mode": "max"}]}, r"^objectives: 'val_noisy_accuracy' is invalid: .* set data\.noisy_val_rate"),
    ({"objectives": [TWO[0], {"metric": "speed", "mode": "max"}]}, r"^objectives\.1\.metric: 'speed' is invalid: trials never report it"),
])
def test_objective_lists_are_validated(tmp_path, change, message):
    raw = {"name": "mo", "model": "m", "data": {"source": "d.csv"}, "search_space": TINY_SPACE, **change}
    with pytest.raises(ConfigError, match=message):
        parse_sweep(raw, tmp_path)


def test_other_objectives_are_read_from_the_best_epoch_of_the_first():
    history = [
        {"val_f1_macro": 0.5, "trainable_params": 10, FINAL: 0},
        {"val_f1_macro": 0.7, "trainable_params": 20, FINAL: 0},
        {"val_f1_macro": 0.6, "trainable_params": 30, FINAL: 1},
    ]
    outcome = classify(history, "val_f1_macro", "max", None, ("trainable_params",))
    assert outcome.state == TrialState.COMPLETE and outcome.values == (0.7, 20.0)
    history[1]["trainable_params"] = float("nan")
    assert classify(history, "val_f1_macro", "max", None, ("trainable_params",)).state == TrialState.FAIL


@pytest.mark.slow
def test_a_two_objective_sweep_stores_the_pareto_front(ray_session, write_sweep):
    space = {**TINY_SPACE, "unfreeze_depth": {"type": "int", "low": 0, "high": 2}}
    path = write_sweep(name="pareto", objective=None, objectives=TWO, search_space=space, trial={"max_epochs": 2},
                       sampler={"name": "nsga2", "seed": 0}, budget={"n_trials": 4, "max_concurrent": 2})
    config = load_sweep(path)
    result = run_sweep(config)

    study = optuna.load_study(study_name="pareto", storage=config.storage.study_db)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in study.trials)
    front = {t.number for t in study.best_trials}
    assert {t.number for t in result.top} == front and result.objectives == ["val_f1_macro", "trainable_params"]

    shown = CliRunner().invoke(app, ["best", "pareto", "--db", config.storage.study_db, "--json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.output)
    assert {row["number"] for row in rows} == front and all(len(row["values"]) == 2 for row in rows)
    text = CliRunner().invoke(app, ["best", "pareto", "--db", config.storage.study_db])
    assert "the Pareto front" in text.output

    _, _, children = mlflow_runs(config)
    assert len(children) == 4
    assert all({"best_val_f1_macro", "best_trainable_params"} <= set(r.data.metrics) for r in children)
