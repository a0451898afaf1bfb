"""Train / validation / test splits as users have them: drawn from one file, separate files, a split
column, a saved DatasetDict; every split checked before compute. No Ray here: prepare() only."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import make_rows

from orchestrator.api import load_sweep
from orchestrator.data.prepare import prepare
from orchestrator.data.splits import AUTO_TEST_MIN_ROWS
from orchestrator.errors import ConfigError


def _prepared(write_sweep, **data):
    return prepare(load_sweep(write_sweep(data=data)))


def _write(tmp_path, name: str, rows: list[dict]) -> str:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_one_file_draws_a_test_split_from_enough_rows(write_sweep):
    prepared = _prepared(write_sweep)  # 600 rows: train 400, validation 100
    assert prepared.splits.sizes() == {"train": 400, "validation": 100, "test": 100}
    assert len(prepared.test) == 100 and len(prepared.data.train) == 400 and len(prepared.data.val) == 100
    assert "drawn" in prepared.splits.origin


def test_no_test_split_below_the_threshold_or_with_test_size_zero(write_sweep, tmp_path):
    small = _write(tmp_path, "small.csv", make_rows(AUTO_TEST_MIN_ROWS - 1))
    prepared = _prepared(write_sweep, source=small, train_size=None, val_size=None)
    assert prepared.test is None and "no test split" in prepared.splits.notes[0]
    assert _prepared(write_sweep, test_size=0).test is None


def test_split_seed_draws_the_split_and_trial_seed_does_not(write_sweep):
    base = _prepared(write_sweep).splits.digests()
    assert prepare(load_sweep(write_sweep(trial={"seed": 7}))).splits.digests() == base
    assert _prepared(write_sweep, split_seed=1).splits.digests()["train"] != base["train"]


def test_separate_files_are_used_as_given(write_sweep, tmp_path):
    train = _write(tmp_path, "train.csv", make_rows(200, seed=1))
    validation = _write(tmp_path, "val.csv", make_rows(40, seed=2))
    test = _write(tmp_path, "test.csv", make_rows(30, seed=3))
    prepared = _prepared(write_sweep, source=train, validation=validation, test=test, train_size=None, val_size=None)
    assert prepared.splits.sizes() == {"train": 200, "validation": 40, "test": 30}
    assert prepared.splits.origin == "files"


def test_a_label_only_the_test_split_has_is_named(write_sweep, tmp_path):
    train = _write(tmp_path, "train.csv", [row for row in make_rows(200, seed=1) if row["label"] != "neutral"])
    validation = _write(tmp_path, "val.csv", [row for row in make_rows(40, seed=2) if row["label"] != "neutral"])
    test = _write(tmp_path, "test.csv", make_rows(30, seed=3))
    with pytest.raises(ConfigError, match=r"data.test: \['neutral'\] is invalid: labels in the test split that the training split lacks"):
        _prepared(write_sweep, source=train, validation=validation, test=test, train_size=None, val_size=None)


def test_overlap_between_train_and_test_is_a_warning_with_the_count(write_sweep, tmp_path):
    rows = make_rows(200, seed=1)
    train = _write(tmp_path, "train.csv", rows)
    validation = _write(tmp_path, "val.csv", make_rows(40, seed=2))
    test = _write(tmp_path, "test.csv", rows[:15] + [{"text": "good good good good good good good", "label": "positive"}])
    prepared = _prepared(write_sweep, source=train, validation=validation, test=test, train_size=None, val_size=None)
    expected = len({row["text"] for row in rows[:15]})
    assert any(f"warning: {expected} test row(s) also appear in the training split" in note for note in prepared.splits.notes)


def test_a_split_too_small_to_score_is_an_error(write_sweep, tmp_path):
    train = _write(tmp_path, "train.csv", make_rows(200, seed=1))
    validation = _write(tmp_path, "val.csv", make_rows(40, seed=2))
    test = _write(tmp_path, "test.csv", make_rows(5, seed=3))
    with pytest.raises(ConfigError, match=r"data.test: '.*test.csv' is invalid: the test split has 5 rows, and a test split of fewer than 10 rows cannot score a model"):
        _prepared(write_sweep, source=train, validation=validation, test=test, train_size=None, val_size=None)


def test_a_split_column(write_sweep, tmp_path):
    rows = make_rows(300)
    for index, row in enumerate(rows):
        row["split"] = ["train", "train", "train", "validation", "test"][index % 5]
    source = _write(tmp_path, "all.csv", rows)
    prepared = _prepared(write_sweep, source=source, split_column="split", train_size=None, val_size=None)
    assert prepared.splits.sizes() == {"train": 180, "validation": 60, "test": 60}
    rows[0]["split"] = "holdout"
    bad = _write(tmp_path, "bad.csv", rows)
    with pytest.raises(ConfigError, match=r"data.split_column: 'split' is invalid: values \['holdout'\] name no split"):
        _prepared(write_sweep, source=bad, split_column="split", train_size=None, val_size=None)
    with pytest.raises(ConfigError, match="give either a split column or validation/test files"):
        _prepared(write_sweep, source=source, split_column="split", validation=source)


def test_a_saved_dataset_dict(write_sweep, tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "neutral", "positive"])})

    def part(n, seed):
        return datasets.Dataset.from_list(make_rows(n, seed), features=features)

    folder = tmp_path / "tweets_dd"
    datasets.DatasetDict({"train": part(150, 1), "validation": part(30, 2), "test": part(20, 3)}).save_to_disk(str(folder))
    prepared = _prepared(write_sweep, source=str(folder), train_size=None, val_size=None)
    assert prepared.splits.sizes() == {"train": 150, "validation": 30, "test": 20}
    assert prepared.label_names == ["negative", "neutral", "positive"]  # ClassLabel ids read as their names
    assert prepared.splits.origin == "a saved DatasetDict"


def test_a_test_file_without_a_validation_file_is_refused(write_sweep, tmp_path):
    test = _write(tmp_path, "test.csv", make_rows(30, seed=3))
    with pytest.raises(ConfigError, match="data.test: .* is invalid: a test file needs a validation file too"):
        _prepared(write_sweep, test=test)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["split_column", "dataset_dict"])
def test_a_sweep_runs_on_each_form_of_splits(form, ray_session, write_sweep, tmp_path):
    """The same tiny sweep end to end on a split column and on a saved DatasetDict (separate files: tests/test_confirmation.py)."""
    import datasets

    from orchestrator.run.runner import run_sweep

    rows = make_rows(300)
    names = ["train", "train", "train", "validation", "test"]
    if form == "split_column":
        source = _write(tmp_path, "all.csv", [{**row, "split": names[i % 5]} for i, row in enumerate(rows)])
        data = {"source": source, "split_column": "split"}
    else:
        source = str(tmp_path / "dataset_dict")
        datasets.DatasetDict({name: datasets.Dataset.from_list([row for i, row in enumerate(rows) if names[i % 5] == name])
                              for name in ("train", "validation", "test")}).save_to_disk(source)
        data = {"source": source}
    config = load_sweep(write_sweep(name=f"forms-{form}", data={**data, "train_size": None, "val_size": None},
                                    trial={"max_epochs": 1}, budget={"n_trials": 1, "max_concurrent": 1}))
    result = run_sweep(config)
    assert result.trials_this_run == {"COMPLETE": 1}
    assert result.splits == {"train": 180, "validation": 60, "test": 60}
    assert result.answer["test"]["rows"] == 60
