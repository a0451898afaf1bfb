"""The embedded default path, as a user runs it: the `hpo` command on the bundled MiniLM and tweets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import registered_model

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def test_hpo_run_on_bundled_model_and_tweets(tmp_path):
    sweep = yaml.safe_load((REPO / "sweeps" / "demo.yaml").read_text())
    sweep["search_space"] = "text_classification"
    sweep["data"].update(train_size=96, val_size=48, max_length=32)
    sweep["trial"] = {"max_epochs": 1}
    sweep["budget"] = {"n_trials": 2, "max_concurrent": 2}
    sweep["confirm"] = {"top_k": 1, "seeds": 1}  # the demo confirms too: the best trial once more with a new seed
    sweep["storage"] = {"study_db": "sqlite:///hpo.db", "mlflow": "sqlite:///mlruns.db", "results_dir": "hpo_runs"}  # beside the copy, not in ../
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    hpo = shutil.which("hpo", path=str(Path(sys.executable).parent)) or "hpo"

    completed = subprocess.run(
        [hpo, "run", "sweep.yaml", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert result["ok"] and result["study_trials"] == {"COMPLETE": 2}
    assert 0.0 < result["best"]["value"] <= 1.0
    assert set(result["baseline"]) >= {"val_f1_macro", "val_accuracy"}
    assert result["best"]["params"]["unfreeze_depth"] in range(0, 7)
    assert (tmp_path / "hpo.db").is_file() and (tmp_path / "mlruns.db").is_file()
    runs = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}").search_runs([result["mlflow_experiment_id"]])
    assert len(runs) == 4  # the sweep's parent run, one child per trial, one confirmation run
    assert completed.stderr.count("COMPLETE") == 3  # one progress line per finished trial and confirmation run
    answer = result["answer"]  # scored on the demo's drawn test tweets, never seen by the search
    assert len(answer["confirmed"]["values"]) == 1 and answer["test"]["rows"] == sweep["data"]["test_size"]
    assert 0 <= answer["test"]["metrics"]["test_f1_macro"] <= 1
    assert "Traceback" not in completed.stderr


def test_hpo_run_lora_preset_on_bundled_model_registers_the_merged_model(tmp_path):
    """The LoRA preset on the bundled MiniLM: adapters train, and the registered model is the
    merged MiniLM that loads like a full fine-tune."""

    sweep = yaml.safe_load((REPO / "sweeps" / "demo.yaml").read_text())
    sweep["search_space"] = "lora"
    sweep["data"].update(train_size=96, val_size=48, test_size=48, max_length=32)
    sweep["trial"] = {"max_epochs": 1}
    sweep["budget"] = {"n_trials": 2, "max_concurrent": 2}
    sweep.pop("confirm")
    sweep["storage"] = {"study_db": "sqlite:///hpo.db", "mlflow": "sqlite:///mlruns.db", "results_dir": "hpo_runs"}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    hpo = shutil.which("hpo", path=str(Path(sys.executable).parent)) or "hpo"

    completed = subprocess.run([hpo, "run", "sweep.yaml", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})

    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert result["ok"] and result["study_trials"] == {"COMPLETE": 2}
    assert result["best"]["params"]["lora_rank"] in (4, 8, 16, 32) and 5e-4 <= result["best"]["params"]["learning_rate"] <= 5e-3
    children = [run for run in MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}").search_runs([result["mlflow_experiment_id"]])
                if "mlflow.parentRunId" in run.data.tags]
    assert len(children) == 2 and all(run.data.metrics["trainable_params"] < 2_000_000 for run in children)  # MiniLM-L6 has 22.7 million
    answer = result["answer"]
    assert answer["registered"] == f"{sweep['registered_model']}/1" and 0 <= answer["test"]["metrics"]["test_f1_macro"] <= 1
    classifier = registered_model(f"sqlite:///{tmp_path / 'mlruns.db'}", f"{sweep['registered_model']}/1")
    assert not any("lora_" in name for name, _ in classifier.model.named_parameters())
    assert {p["label"] for p in classifier(["what a great day", "worst service ever"])} <= {"negative", "neutral", "positive"}
    assert "Traceback" not in completed.stderr
