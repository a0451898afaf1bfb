"""A trial survives its own failures: it resumes from its last checkpoint, and an out-of-memory
step is retried with half the rows per pass and gradient accumulation."""

from __future__ import annotations

import pytest
import torch

import trials.finetune
from tests.conftest import Recorder, comparable_metrics, encoded_tiny_data
from trials import checkpoint
from trials.finetune import Hyperparameters, TrialSettings, fine_tune

HYPERPARAMETERS = Hyperparameters(learning_rate=5e-3, batch_size=16, unfreeze_depth=1, dropout=0.0, warmup_ratio=0.2)


@pytest.fixture(scope="module")
def trial_inputs(tiny_model, tiny_csv):
    label_names, pad_id, data = encoded_tiny_data(tiny_model, tiny_csv, 200, 100)
    settings = TrialSettings(str(tiny_model), label_names, pad_id, max_epochs=3,
                             objective="val_f1_macro", mode="max", num_threads=1, checkpoint=True)
    return settings, data


def test_resuming_from_a_checkpoint_continues_exactly_where_training_stopped(trial_inputs, tmp_path):
    settings, data = trial_inputs
    uninterrupted = Recorder(tmp_path)
    fine_tune(settings, HYPERPARAMETERS, data, uninterrupted)
    assert [m["epoch"] for m in uninterrupted.metrics] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch1", "epoch2"]  # none after the last epoch

    resumed = Recorder(tmp_path / "again")
    fine_tune(settings, HYPERPARAMETERS, data, resumed, resume=checkpoint.load(tmp_path / "epoch1"))

    assert [m["epoch"] for m in resumed.metrics] == [2, 3]
    for expected, got in zip(uninterrupted.metrics[1:], resumed.metrics, strict=True):
        assert comparable_metrics(got) == pytest.approx(comparable_metrics(expected), rel=1e-5)


def test_checkpoint_holds_only_the_parameters_that_train(trial_inputs, tmp_path):
    settings, data = trial_inputs
    fine_tune(settings, HYPERPARAMETERS, data, Recorder(tmp_path))
    saved = checkpoint.load(tmp_path / "epoch1")
    assert saved["state"] == {"epoch": 1, "best": pytest.approx(saved["state"]["best"]), "stale_epochs": 0, "micro_batch_size": 16}
    assert saved["trainable"] and all("layer.0." not in name and "embeddings" not in name for name in saved["trainable"])


def test_the_last_report_hands_over_the_best_epochs_parameters(trial_inputs, tmp_path):
    """With keep_best_model, every checkpoint and the final report carry the best epoch's trained
    parameters: what the study values the trial by, not whatever the last epoch left."""
    from dataclasses import replace

    settings, data = trial_inputs
    recorder = Recorder(tmp_path)
    # minimising F1 while training raises it makes epoch 1 the best, deterministically
    fine_tune(replace(settings, keep_best_model=True, mode="min"), HYPERPARAMETERS, data, recorder)
    scores = [m["val_f1_macro"] for m in recorder.metrics]
    assert scores.index(min(scores)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch1", "epoch2", "epoch3"]  # the last report brought one too
    assert checkpoint.load(tmp_path / "epoch3") is None  # no training state: a finished trial never resumes
    final, at_best = checkpoint.load_best_model(tmp_path / "epoch3"), checkpoint.load(tmp_path / "epoch1")["trainable"]
    assert final.keys() == at_best.keys() and all(torch.equal(final[name], at_best[name]) for name in final)
    last_state = checkpoint.load(tmp_path / "epoch2")
    assert any(not torch.equal(final[name], last_state["trainable"][name]) for name in final)  # training went on
    assert all(torch.equal(final[name], last_state["best_model"][name]) for name in final)  # a resumed trial keeps it


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(trial_inputs, tmp_path, monkeypatch):
    settings, data = trial_inputs
    baseline = Recorder(tmp_path / "plain")
    fine_tune(settings, HYPERPARAMETERS, data, baseline)

    real_forward = trials.finetune.forward_loss
    passes = []

    def forward_without_memory_for_more_than_4_rows(model, batch, loss_fn):
        passes.append(len(batch["labels"]))
        if len(batch["labels"]) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(model, batch, loss_fn)

    monkeypatch.setattr(trials.finetune, "forward_loss", forward_without_memory_for_more_than_4_rows)
    shrunk = Recorder(tmp_path / "shrunk")
    fine_tune(settings, HYPERPARAMETERS, data, shrunk)

    assert passes[:3] == [16, 8, 4]  # two retries of the first step, then 4 rows per pass
    assert max(passes[3:]) == 4
    assert [m["micro_batch_size"] for m in shrunk.metrics] == [4, 4, 4]
    assert [m["micro_batch_size"] for m in baseline.metrics] == [16, 16, 16]
    # The same optimisation, up to float summation order: the effective batch is still 16.
    for expected, got in zip(baseline.metrics, shrunk.metrics, strict=True):
        assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-3)
        assert got["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-3)


def test_out_of_memory_at_one_row_per_pass_fails_the_trial(trial_inputs, tmp_path, monkeypatch):
    settings, data = trial_inputs

    def never_fits(model, batch, loss_fn):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(trials.finetune, "forward_loss", never_fits)
    with pytest.raises(torch.OutOfMemoryError):
        fine_tune(settings, HYPERPARAMETERS, data, Recorder(tmp_path))
