"""Each split as an MLflow dataset input: every split on the parent run, train and validation on
each trial's run (no trial sees the test split), so the MLflow UI's Dataset column says what each
run was trained and scored on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from conftest import described_inputs, make_rows

from orchestrator.api import load_sweep
from orchestrator.data.prepare import prepare
from orchestrator.sweep.config import parse_sweep
from orchestrator.tracking.dataset_inputs import dataset_inputs, log_dataset_inputs


def test_each_split_is_described_by_its_source_digest_rows_and_columns(write_sweep, tiny_csv):
    prepared = prepare(load_sweep(write_sweep(name="described")))
    inputs = described_inputs(dataset_inputs(prepared).values())
    assert sorted(inputs) == ["test", "train", "validation"]
    digests = prepared.splits.digests()
    for split, rows in (("train", 400), ("validation", 100), ("test", 100)):
        described = inputs[split]
        assert described["name"] == f"described {split}" and described["digest"] == digests[split]
        assert described["source_type"] == "local" and described["source"]["uri"] == str(tiny_csv)
        assert described["source"]["split"] == split and described["source"]["split_by"] == "drawn with split_seed 0"
        assert described["profile"] == {"num_rows": rows, "num_labels": 3}
        assert described["columns"] == ["text", "label"]


def test_separate_files_are_each_their_own_source(write_sweep, tmp_path):
    paths = {}
    for split, n, seed in (("train", 200, 1), ("validation", 40, 2), ("test", 30, 3)):
        paths[split] = tmp_path / f"{split}.csv"
        pd.DataFrame(make_rows(n, seed=seed)).to_csv(paths[split], index=False)
    config = load_sweep(write_sweep(data={"source": str(paths["train"]), "validation": str(paths["validation"]), "test": str(paths["test"]),
                                          "train_size": None, "val_size": None}))
    inputs = described_inputs(dataset_inputs(prepare(config)).values())
    assert {split: described["source"]["uri"] for split, described in inputs.items()} == {split: str(path) for split, path in paths.items()}
    assert {split: described["profile"]["num_rows"] for split, described in inputs.items()} == {"train": 200, "validation": 40, "test": 30}


def test_a_sweep_with_its_own_training_function_logs_no_dataset(tmp_path):
    example = Path(__file__).resolve().parent.parent / "examples" / "byo_function"
    raw = yaml.safe_load((example / "sweep.yaml").read_text())
    raw["storage"] = {"study_db": f"sqlite:///{tmp_path / 'study.db'}", "mlflow": f"sqlite:///{tmp_path / 'mlruns.db'}"}
    assert dataset_inputs(prepare(parse_sweep(raw, example))) == {}


def test_a_failure_to_log_inputs_is_a_note(write_sweep):
    class Broken:
        def log_inputs(self, run_id, datasets):
            raise RuntimeError("the tracking server said no")

    inputs = dataset_inputs(prepare(load_sweep(write_sweep())))
    assert log_dataset_inputs(Broken(), "run", inputs.values(), "the parent run") == [
        "dataset inputs not logged on the parent run: RuntimeError: the tracking server said no"]
    assert log_dataset_inputs(Broken(), "run", [], "the parent run") == []

# The parent and trial runs of a real sweep: tests/test_confirmation.py (one sweep serves both).
