"""The trial loop on a CUDA device. Skipped where there is none (CI has none; a GPU worker does)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import encoded_tiny_data
from trials.finetune import Hyperparameters, TrialSettings, fine_tune

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_fine_tune_runs_on_the_gpu(tiny_model, tiny_csv):
    label_names, pad_id, data = encoded_tiny_data(tiny_model, tiny_csv, 400, 100)
    settings = TrialSettings(str(tiny_model), label_names, pad_id, max_epochs=3,
                             objective="val_f1_macro", mode="max", use_gpu=True)
    torch.cuda.reset_peak_memory_stats()
    reports: list[dict] = []

    fine_tune(settings, Hyperparameters(learning_rate=5e-3, batch_size=8, unfreeze_depth=2), data, reports.append)

    assert torch.cuda.max_memory_allocated() > 0
    assert len(reports) == 3 and reports[-1]["is_final"] == 1
    assert all(np.isfinite(r["train_loss"]) for r in reports)
    assert max(r["val_f1_macro"] for r in reports) > 0.4


def test_a_real_cuda_out_of_memory_step_is_retried_with_smaller_passes(tiny_model, tiny_csv):
    """The allocator is capped at ~1.5 GiB; one batch of 40,000 texts cannot fit, so the loop
    halves the rows per pass (gradient accumulation) until it does, and training goes on."""
    from trials.data import EncodedSplit
    from trials.finetune import TrialData

    label_names, pad_id, small = encoded_tiny_data(tiny_model, tiny_csv, 400, 100)
    rows, length = 40_000, 64
    rng = np.random.default_rng(0)
    big = EncodedSplit(
        ids=rng.integers(5, 20, size=rows * length).astype(np.int32),
        offsets=np.arange(0, rows * length + 1, length, dtype=np.int64),
        labels=rng.integers(0, len(label_names), size=rows).astype(np.int64),
    )
    settings = TrialSettings(str(tiny_model), label_names, pad_id, max_epochs=1,
                             objective="val_f1_macro", mode="max", use_gpu=True)
    fraction = 1.5 * 2**30 / torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        reports: list[dict] = []
        fine_tune(settings, Hyperparameters(learning_rate=1e-3, batch_size=rows, unfreeze_depth=2), TrialData(big, small.val), reports.append)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert reports[-1]["micro_batch_size"] < rows  # it really ran out of memory, and recovered
    assert np.isfinite(reports[-1]["train_loss"])
    print(f"\nmicro-batch after out-of-memory retries: {reports[-1]['micro_batch_size']} of {rows}")


def test_a_finished_trial_gives_its_gpu_memory_back(tiny_model, tiny_csv):
    """Ray reuses a worker for the next trial; a fractional-GPU neighbour must get the memory back."""
    from trials.entrypoint import release_accelerator_memory

    label_names, pad_id, data = encoded_tiny_data(tiny_model, tiny_csv, 400, 100)
    settings = TrialSettings(str(tiny_model), label_names, pad_id, max_epochs=1,
                             objective="val_f1_macro", mode="max", use_gpu=True)
    torch.cuda.empty_cache()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()

    for _ in range(2):  # two trials in one worker process
        fine_tune(settings, Hyperparameters(learning_rate=5e-3, batch_size=64, unfreeze_depth=2), data, lambda metrics, **_: None)
        assert torch.cuda.memory_reserved() > reserved  # the allocator held the trial's blocks
        release_accelerator_memory()
        assert torch.cuda.memory_allocated() == allocated
        assert torch.cuda.memory_reserved() == reserved


@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16", "fp32"])
def test_each_precision_trains_on_the_gpu(tiny_model, tiny_csv, monkeypatch, precision):
    """auto is bf16 where the GPU supports it; the forward passes really run in that format."""
    import trials.finetune
    from trials.precision import precision_for

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    resolved = precision_for(precision, torch.device("cuda"))
    expected = {"auto": torch.bfloat16 if torch.cuda.is_bf16_supported() else None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    assert resolved.dtype == expected[precision] and resolved.scaler.is_enabled() == (precision == "fp16")
    casts = []
    real_forward = trials.finetune.forward_loss

    def recording_forward(model, batch, loss_fn):
        casts.append(torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None)
        return real_forward(model, batch, loss_fn)

    monkeypatch.setattr(trials.finetune, "forward_loss", recording_forward)
    label_names, pad_id, data = encoded_tiny_data(tiny_model, tiny_csv, 400, 100)
    settings = TrialSettings(str(tiny_model), label_names, pad_id, max_epochs=3, objective="val_f1_macro", mode="max",
                             use_gpu=True, precision=precision)
    reports: list[dict] = []
    fine_tune(settings, Hyperparameters(learning_rate=5e-3, batch_size=8, unfreeze_depth=2), data, reports.append)
    assert set(casts) == {expected[precision]}
    assert all(np.isfinite(r["train_loss"]) for r in reports)
    assert max(r["val_f1_macro"] for r in reports) > 0.4


def test_lora_with_gradient_checkpointing_trains_on_the_gpu(tiny_model, tiny_csv):
    label_names, pad_id, data = encoded_tiny_data(tiny_model, tiny_csv, 400, 100)
    settings = TrialSettings(str(tiny_model), label_names, pad_id, max_epochs=3, objective="val_f1_macro", mode="max",
                             use_gpu=True, gradient_checkpointing=True)
    reports: list[dict] = []
    fine_tune(settings, Hyperparameters(method="lora", learning_rate=1e-2, batch_size=8, lora_rank=8), data, reports.append)
    assert all(np.isfinite(r["train_loss"]) for r in reports)
    assert reports[-1]["trainable_params"] < 10_000
