"""trial.precision and trial.gradient_checkpointing. The autocast and gradient-scaler plumbing of
the trial loop runs here on the CPU (bf16 and fp16 autocast exist there too); what only a CUDA GPU
decides (auto picking bf16, a GPU without bf16) is in tests/test_gpu.py."""

from __future__ import annotations

import pytest
import torch

import trials.finetune
from orchestrator.api import load_sweep
from orchestrator.errors import ConfigError
from tests.conftest import encoded_tiny_data
from trials.finetune import Hyperparameters, TrialSettings, fine_tune
from trials.precision import Precision, precision_for

HYPERPARAMETERS = Hyperparameters(learning_rate=5e-3, batch_size=16, dropout=0.0)


@pytest.fixture(scope="module")
def trial_inputs(tiny_model, tiny_csv):
    label_names, pad_id, data = encoded_tiny_data(tiny_model, tiny_csv, 200, 100)
    return TrialSettings(str(tiny_model), label_names, pad_id, max_epochs=2, objective="val_f1_macro", mode="max", num_threads=1), data


def test_on_the_cpu_auto_is_fp32_and_mixed_precision_is_refused():
    cpu = torch.device("cpu")
    assert precision_for("auto", cpu).dtype is None and precision_for("fp32", cpu).dtype is None
    assert not precision_for("auto", cpu).scaler.is_enabled()
    with pytest.raises(ValueError, match="trial.precision bf16 autocasts on CUDA GPUs, and this trial runs on cpu; use auto or fp32"):
        precision_for("bf16", cpu)
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid names are auto, fp32, bf16, fp16"):
        precision_for("fp8", cpu)


@pytest.mark.parametrize("dtype, scaled", [(torch.bfloat16, False), (torch.float16, True)], ids=["bf16", "fp16-scaled"])
def test_the_loop_trains_under_autocast_and_the_gradient_scaler(trial_inputs, monkeypatch, dtype, scaled):
    """The CUDA path with the CPU's autocast: forward passes in ``dtype``, fp32 weights, and for
    fp16 a gradient scaler that unscales before clipping; the result stays close to fp32's."""
    settings, data = trial_inputs
    plain: list[dict] = []
    fine_tune(settings, HYPERPARAMETERS, data, plain.append)

    casts = []
    real_forward = trials.finetune.forward_loss

    def recording_forward(model, batch, loss_fn):
        casts.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return real_forward(model, batch, loss_fn)

    mixed = Precision(dtype, "cpu", torch.amp.GradScaler("cpu", init_scale=2.0**8, enabled=scaled))
    monkeypatch.setattr(trials.finetune, "precision_for", lambda name, device: mixed)
    monkeypatch.setattr(trials.finetune, "forward_loss", recording_forward)
    reports: list[dict] = []
    fine_tune(settings, HYPERPARAMETERS, data, reports.append)

    assert casts and set(casts) == {dtype}
    assert mixed.scaler.is_enabled() == scaled and (not scaled or mixed.scaler.get_scale() > 0)
    for fp32, autocast in zip(plain, reports, strict=False):
        assert autocast["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.05)
        assert autocast["val_loss"] == pytest.approx(fp32["val_loss"], rel=0.05)
    assert reports != plain  # it really ran in another format


def test_gradient_checkpointing_recomputes_and_changes_nothing_else(trial_inputs, monkeypatch):
    import transformers.modeling_utils

    settings, data = trial_inputs
    plain: list[dict] = []
    fine_tune(settings, HYPERPARAMETERS, data, plain.append)
    calls = []
    real_checkpoint = transformers.modeling_utils.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counting_checkpoint)
    from dataclasses import replace

    checkpointed: list[dict] = []
    fine_tune(replace(settings, gradient_checkpointing=True), HYPERPARAMETERS, data, checkpointed.append)
    lora: list[dict] = []
    fine_tune(replace(settings, gradient_checkpointing=True, max_epochs=1), Hyperparameters(method="lora", learning_rate=1e-2, batch_size=16), data, lora.append)

    assert calls and set(calls) == {False}  # every layer's forward, non-reentrant
    for expected, got in zip(plain, checkpointed, strict=True):
        assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-4)
        assert got["val_f1_macro"] == pytest.approx(expected["val_f1_macro"], abs=1e-6)
    assert lora and torch.isfinite(torch.tensor(lora[-1]["train_loss"]))


@pytest.mark.parametrize("trial, fix", [
    ({"precision": "bf16"}, "trial.precision: 'bf16' is invalid: it autocasts on CUDA GPUs and these trials run on CPU (resources.gpu: 0)"),
    ({"precision": "half"}, "trial.precision: 'half' is invalid: unknown precision; valid names are auto, bf16, fp16, fp32"),
])
def test_precision_is_checked_in_the_sweep_file(write_sweep, trial, fix):
    with pytest.raises(ConfigError) as raised:
        load_sweep(write_sweep(trial=trial))
    assert str(raised.value).startswith(fix), str(raised.value)


def test_precision_and_gradient_checkpointing_reach_the_trials(write_sweep):
    from types import SimpleNamespace

    from orchestrator.data.trial_settings import trial_settings

    config = load_sweep(write_sweep(trial={"precision": "bf16", "gradient_checkpointing": True}, resources={"cpu": 1, "gpu": 1}))
    settings = trial_settings(SimpleNamespace(config=config, model_path="m", label_names=["a", "b"], pad_token_id=0), keep_best_model=False)
    assert settings.precision == "bf16" and settings.gradient_checkpointing
