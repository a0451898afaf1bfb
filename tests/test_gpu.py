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
