"""trial.function: a training function of your own runs as the trial; search, ASHA, the study
DB and MLflow work as for the built-in fine-tuning."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from orchestrator.api import run_sweep
from orchestrator.errors import ConfigError
from orchestrator.run.runner import validate
from orchestrator.sweep.config import load_sweep, parse_sweep
from tests.conftest import mlflow_runs
from trials import report

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "byo_function"


def _example(tmp_path, **overrides) -> dict:
    """The example sweep file, storing into ``tmp_path``."""
    raw = yaml.safe_load((EXAMPLE / "sweep.yaml").read_text())
    raw["storage"] = {"study_db": f"sqlite:///{tmp_path / 'study.db'}", "mlflow": f"sqlite:///{tmp_path / 'mlruns.db'}",
                      "results_dir": str(tmp_path / "runs")}
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) and key != "search_space" else value
    return raw


def test_the_example_sweep_file_validates_without_model_or_data(tmp_path):
    config = parse_sweep(_example(tmp_path), EXAMPLE)
    assert config.user_function and config.model is None and config.data is None
    assert config.trial.function == f"{EXAMPLE / 'train.py'}:main"  # resolved against the sweep file's folder
    prepared = validate(config)
    assert prepared.function is not None and prepared.data is None
    module_form = parse_sweep(_example(tmp_path, trial={"function": "examples.byo_function.train:main"}), tmp_path)
    assert validate(module_form).function.module == "examples.byo_function.train"


def test_report_does_nothing_outside_a_sweep():
    report.epoch({"score": 1.0})
    with report.restored_checkpoint() as folder:
        assert folder is None


@pytest.mark.parametrize("function, fix", [
    ("nosuchmodule_hpo_test:main", "no module named 'nosuchmodule_hpo_test'"),
    ("examples.byo_function.train:nope", "has no 'nope'; name a function defined there"),
    ("json:__doc__", "is a str, not a function"),
    ("broken.py:main", "importing"),
    ("cli_script.py:main", "arguments are required: --data): it runs a program when imported, e.g. argparse"),
    ("exits.py:main", "exited ('no GPU here'): it runs a program when imported"),
])
def test_a_bad_function_is_refused_before_anything_runs(tmp_path, function, fix, capsys):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "cli_script.py").write_text("import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--data', required=True)\n"
                                            "args = parser.parse_args()\ndef main(config): pass\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit('no GPU here')\n")
    config = parse_sweep(_example(tmp_path, trial={"function": function}), tmp_path)
    with pytest.raises(ConfigError) as raised:
        run_sweep(config)
    message = str(raised.value)
    assert message.startswith("trial.function:") and fix in message and "\n" not in message, message
    assert "usage:" not in capsys.readouterr().err  # argparse's usage lines stay out of the one-line error
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "mlruns.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("change, field, fix", [
    ({"trial": {"function": "missing.py:main"}}, "trial.function", "no such file missing.py"),
    ({"trial": {"function": "train.main"}}, "trial.function", '"package.module:function"'),
    ({"model": "bundled:minilm-l6"}, "model", "trial.function loads its own model and data"),
    ({"data": {"source": "x.csv"}}, "data", "remove this key"),
    ({"task": "image-classification"}, "task", "remove this key"),
    ({"objective": {"metric": "epoch", "mode": "max"}}, "objective.metric", "another name"),
    ({"trial": {"function": None}}, "model", "set trial.function"),
    ({"trial": {"checkpoint": False}}, "trial.checkpoint", "checkpoints and seeds itself"),
])
def test_function_sweep_files_are_checked(tmp_path, change, field, fix):
    with pytest.raises(ConfigError) as raised:
        parse_sweep(_example(tmp_path, **change), EXAMPLE)
    message = str(raised.value)
    assert message.startswith(f"{field}:") and fix in message, message


@pytest.mark.slow
def test_tpe_with_asha_finds_the_optimum_of_a_known_function(ray_session, tmp_path):
    """25 trials of TPE, 2 at a time, ASHA stopping poor ones after an epoch: the best lands near (0.3, -1)."""
    config = parse_sweep(_example(tmp_path), EXAMPLE)
    result = run_sweep(config)

    trials = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
    states = {state: sum(t.state == state for t in trials) for state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert len(trials) == 25 and sum(states.values()) == 25
    assert states[TrialState.PRUNED] > 0 and states[TrialState.COMPLETE] > 0
    best = result.best
    assert best.value > -0.15, best  # within about 0.4 of the optimum; a random point is about 1.5 away
    assert abs(best.params["x"] - 0.3) < 0.35 and abs(best.params["y"] + 1) < 0.35
    for trial in trials:
        assert -2 <= trial.params["x"] <= 2 and -3 <= trial.params["y"] <= 1
        if trial.state == TrialState.COMPLETE:
            assert sorted(trial.intermediate_values) == [1, 2, 3]
            assert trial.value == pytest.approx(-((trial.params["x"] - 0.3) ** 2 + (trial.params["y"] + 1) ** 2))

    client, parents, children = mlflow_runs(config)
    assert parents[0].data.params["trial.function"] == config.trial.function
    assert {run.info.status for run in children} == {"FINISHED", "KILLED"}
    finished = next(run for run in children if run.info.status == "FINISHED")
    assert {"score", "distance"} <= set(finished.data.metrics)
    assert [m.step for m in client.get_metric_history(finished.info.run_id, "score")] == [1, 2, 3]


@pytest.mark.slow
def test_a_function_that_stops_early_completes_and_one_that_breaks_fails(ray_session, tmp_path):
    (tmp_path / "train.py").write_text(
        "from trials import report\n"
        "def main(config):\n"
        "    if config['kind'] == 'broken':\n"
        "        report.epoch({'other': 1.0})\n"
        "    report.epoch({'score': 0.5})\n"  # one epoch of the three allowed, then it returns
    )
    raw = _example(tmp_path, search_space={"kind": {"type": "categorical", "choices": ["ok", "broken"]}},
                   seed_trials=[{"kind": "ok"}, {"kind": "broken"}], budget={"n_trials": 2, "max_concurrent": 2},
                   scheduler={"name": "fifo"})
    config = parse_sweep(raw, tmp_path)
    run_sweep(config)
    trials = {t.params["kind"]: t for t in optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials}
    assert trials["ok"].state == TrialState.COMPLETE and trials["ok"].value == 0.5
    assert trials["broken"].state == TrialState.FAIL
    assert "report.epoch() got no score" in trials["broken"].user_attrs["state_reason"]
    client, _, children = mlflow_runs(config)
    ok = next(run for run in children if run.data.params["kind"] == "ok")
    assert ok.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(ok.info.run_id, "score")] == [1]  # its last epoch repeated as final is logged once


DIES_ONCE = """
import json, os, tempfile
from pathlib import Path
from trials import report

HERE = Path(__file__).parent

def main(config):
    first = 1
    with report.restored_checkpoint() as folder:
        if folder is not None:
            first = json.loads((folder / "state.json").read_text())["epoch"] + 1
            (HERE / "resumed-at").write_text(str(first))
    for epoch in range(first, 4):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "state.json").write_text(json.dumps({"epoch": epoch}))
            report.epoch({"score": config["x"] * epoch}, checkpoint_dir=folder)
        if epoch == 2 and not (HERE / "died").exists():
            (HERE / "died").touch()
            os._exit(1)  # the worker dies, like a process killed for memory
"""


@pytest.mark.slow
def test_a_function_whose_worker_dies_resumes_from_its_own_checkpoint(ray_session, tmp_path):
    (tmp_path / "train.py").write_text(DIES_ONCE)
    raw = _example(tmp_path, search_space={"x": {"type": "float", "low": 0.1, "high": 0.2}}, trial={"max_failures": 1},
                   budget={"n_trials": 1, "max_concurrent": 1}, scheduler={"name": "fifo"})
    config = parse_sweep(raw, tmp_path)
    result = run_sweep(config)

    assert result.trials_this_run == {"COMPLETE": 1} and (tmp_path / "resumed-at").read_text() == "3"
    [trial] = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
    assert sorted(trial.intermediate_values) == [1, 2, 3]  # the epoch count continued after the restart
    assert trial.value == pytest.approx(3 * trial.params["x"])
    [child] = mlflow_runs(config)[2]
    assert child.data.tags["hpo.restarts"] == "1" and child.info.status == "FINISHED"


def test_load_sweep_resolves_the_function_file_against_the_sweep_file(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    (tmp_path / "train.py").write_text("def main(config):\n    pass\n")
    sweep.write_text(yaml.safe_dump({"name": "x", "objective": {"metric": "loss", "mode": "min"}, "trial": {"function": "train.py:main"},
                                     "search_space": {"lr": {"type": "float", "low": 0.1, "high": 1.0}}}))
    assert load_sweep(sweep).trial.function == f"{tmp_path / 'train.py'}:main"


SLOW_TO_STOP = """
import time
from trials import report

def main(config):
    try:
        for epoch in range(1, 4):
            report.epoch({"score": config["x"] * epoch})
    finally:
        time.sleep(4)  # winding down (freeing a model on a busy machine) outlasts Ray's 2 s default
"""


@pytest.mark.slow
def test_a_trial_stopped_by_the_scheduler_that_winds_down_slowly_does_not_fail_the_next(ray_session, tmp_path):
    (tmp_path / "train.py").write_text(SLOW_TO_STOP)
    raw = _example(tmp_path, search_space={"x": {"type": "float", "low": 0.0, "high": 1.0}},
                   seed_trials=[{"x": 0.5}, {"x": 0.1}, {"x": 0.9}], budget={"n_trials": 3, "max_concurrent": 1},
                   scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2})
    config = parse_sweep(raw, tmp_path)
    run_sweep(config)
    trials = {t.params["x"]: t for t in optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials}
    assert trials[0.1].state == TrialState.PRUNED  # stopped after its first epoch; the next trial reuses its worker
    assert trials[0.9].state == TrialState.COMPLETE, trials[0.9].user_attrs.get("state_reason")
