"""The inspection commands answer at once: neither they nor the help pages import torch,
transformers, Ray or MLflow (importing them costs seconds before a single line is printed).

Each command runs in a fresh interpreter, on a real study database, and reports which heavy
packages ``sys.modules`` holds afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from orchestrator.storage.trial_attrs import ANSWER_ATTR

HEAVY = ("torch", "transformers", "ray", "mlflow")
WATCHED = (*HEAVY, "optuna")  # the help pages answer before even Optuna loads
REPO = Path(__file__).resolve().parents[1]

# Runs the hpo command line on argv, then prints the exit code and the watched packages imported, as the last line.
PROBE = f"""
import json, sys
from orchestrator.cli import app
try:
    app(sys.argv[1:], prog_name="hpo")
    code = 0
except SystemExit as exit:
    code = exit.code
print()
print(json.dumps({{"code": code, "loaded": sorted(name for name in {WATCHED!r} if name in sys.modules)}}))
"""


@pytest.fixture(scope="module")
def study_db(tmp_path_factory) -> str:
    """A study as a sweep leaves it: complete, pruned and failed trials, and a chosen configuration."""
    url = f"sqlite:///{tmp_path_factory.mktemp('study') / 'hpo.db'}"
    study = optuna.create_study(study_name="nightly", storage=url, direction="maximize")
    distributions = {"learning_rate": FloatDistribution(1e-5, 1e-3, log=True)}
    for number, value in enumerate((0.70, 0.82, 0.75)):
        study.add_trial(create_trial(value=value, params={"learning_rate": 1e-4 * (number + 1)}, distributions=distributions))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"learning_rate": 1e-5}, distributions=distributions, intermediate_values={1: 0.4}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"learning_rate": 1e-3}, distributions=distributions))
    study.set_user_attr(ANSWER_ATTR, {"trial": 1, "params": {"learning_rate": 2e-4}, "metric": "val_f1_macro", "search_value": 0.82, "search_trials": 3})
    return url


def run_probe(*argv: str, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


COMMANDS = {
    "--help": ["--help"],
    "validate --help": ["validate", "--help"],
    "run --help": ["run", "--help"],
    "studies": ["studies", "--db", "{db}"],
    "studies --json": ["studies", "--db", "{db}", "--json"],
    "trials": ["trials", "nightly", "--db", "{db}", "--sort", "value"],
    "best": ["best", "nightly", "--db", "{db}", "--top", "2"],
    "export": ["export", "nightly", "--db", "{db}", "--format", "json", "--out", "nightly.json"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_inspection_commands_import_no_heavy_package(command, study_db, tmp_path):
    probe = run_probe(*(arg.format(db=study_db) for arg in COMMANDS[command]), cwd=tmp_path)
    assert probe["code"] == 0
    assert [name for name in probe["loaded"] if name in HEAVY] == []
    if command.endswith("--help"):
        assert "optuna" not in probe["loaded"]


def test_the_probe_sees_a_heavy_import(tmp_path):
    """The check above can fail: a command that does import Ray is reported."""
    probe = run_probe("run", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert probe["code"] == 2 and "ray" in probe["loaded"]


def test_import_orchestrator_is_light_and_names_the_api(tmp_path):
    """``import orchestrator`` loads no heavy package; every name it exports resolves, the API's from orchestrator.api."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = f"import sys, orchestrator; print(sorted(name for name in {HEAVY!r} if name in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip() == "[]"

    import orchestrator
    from orchestrator import api

    assert all(getattr(orchestrator, name) is getattr(api, name) for name in orchestrator.API_NAMES)
    assert all(hasattr(orchestrator, name) for name in orchestrator.__all__)


def test_validate_refuses_a_bad_database_before_loading_torch(tmp_path):
    """hpo validate checks where the run writes before the model and data: a study database in a
    missing folder is refused (exit 2) with none of the heavy packages loaded."""
    import yaml

    sweep = yaml.safe_load((REPO / "sweeps" / "demo.yaml").read_text())
    sweep["search_space"] = str(REPO / "search_spaces" / "text_classification.yaml")
    sweep["storage"] = {"study_db": f"sqlite:///{tmp_path / 'missing' / 'hpo.db'}", "mlflow": f"sqlite:///{tmp_path / 'mlruns.db'}",
                        "results_dir": str(tmp_path / "runs")}
    (tmp_path / "bad-db.yaml").write_text(yaml.safe_dump(sweep))
    probe = run_probe("validate", "bad-db.yaml", cwd=tmp_path)
    assert probe["code"] == 2
    assert [name for name in probe["loaded"] if name in HEAVY] == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad-db.yaml"]  # nothing written


def test_a_trial_worker_loads_no_peft_for_a_full_fine_tuning_trial(tmp_path):
    """Every trial's worker imports the fine-tuning loop before its first step: peft (and
    transformers' trainer utilities, which import it) load only where a LoRA trial runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "import sys, trials.entrypoint; print(sorted(n for n in ('peft', 'transformers.trainer_utils') if n in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip() == "[]"
