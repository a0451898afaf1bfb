"""Fine-tuning techniques a search can turn on: layer-wise learning-rate decay, gradual
unfreezing, class balancing, token augmentation, and the typo-robustness metric."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.errors import ConfigError
from orchestrator.sweep.config import parse_sweep
from tests.conftest import TINY_SPACE, encoded_tiny_data
from trials import finetune
from trials.augment import add_typos, drop_and_swap_tokens, noisy_copies
from trials.data import balanced_rows
from trials.finetune import Hyperparameters, TrialSettings, fine_tune
from trials.metrics import per_class_f1
from trials.model import apply_unfreeze_depth, layer_groups, load_classifier


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_classifier(str(tiny_model), ["negative", "neutral", "positive"])


def test_layer_groups_cover_exactly_what_unfreeze_depth_trains(model):
    for depth in (0, 1, 2):
        apply_unfreeze_depth(model, depth)
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        groups = layer_groups(model, depth)
        assert {id(p) for group in groups for p in group} == trainable
        assert len(groups) == (1 if depth == 0 else 1 + depth + (depth == 2))  # full depth adds the embeddings


def test_layer_lr_decay_gives_each_group_down_the_stack_a_smaller_rate(model):
    apply_unfreeze_depth(model, 2)
    optimizer = finetune._adamw(layer_groups(model, 2), Hyperparameters(learning_rate=1e-3, layer_lr_decay=0.5, weight_decay=0.01))
    rates = sorted({group["lr"] for group in optimizer.param_groups}, reverse=True)
    assert rates == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4])  # head, top layer, next layer, embeddings
    assert all(group["weight_decay"] == 0.0 for group in optimizer.param_groups if all(p.ndim < 2 for p in group["params"]))


def test_gradual_unfreezing_adds_one_layer_every_k_epochs(model):
    apply_unfreeze_depth(model, 2)
    groups = layer_groups(model, 2)
    trains = []
    for epoch in range(1, 6):
        finetune._unfreeze_for_epoch(groups, every=2, epoch=epoch)
        trains.append([all(p.requires_grad for p in group) for group in groups])
    assert trains == [
        [True, True, False, False],  # epoch 1-2: head and top layer
        [True, True, False, False],
        [True, True, True, False],  # epoch 3-4: one more layer
        [True, True, True, False],
        [True, True, True, True],  # epoch 5: the embeddings too
    ]


def test_class_weights_and_oversampling_balance_the_classes():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    weights = finetune._class_weights(labels, 3, "cpu").numpy()
    assert weights == pytest.approx([100 / 240, 100 / 45, 100 / 15])
    many = np.repeat(labels, 50)
    rows = balanced_rows(many, np.random.default_rng(1))
    assert len(rows) == len(many)
    counts = np.bincount(many[rows], minlength=3)
    assert counts.min() / counts.max() > 0.9


def test_per_class_f1_names_each_class():
    scores = per_class_f1(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ["neg", "neu tral", "pos/x"])
    assert scores == pytest.approx({"val_f1_class.neg": 0.5, "val_f1_class.neu tral": 0.8, "val_f1_class.pos/x": 0.0})


def test_typos_are_seeded_and_near_the_rate():
    texts = ["the quick brown fox jumps over the lazy dog"] * 200
    noisy = noisy_copies(texts, 0.1, seed=3)
    assert noisy == noisy_copies(texts, 0.1, seed=3) and noisy != noisy_copies(texts, 0.1, seed=4)
    changed = sum(a != b for a, b in zip(texts, noisy, strict=True))
    assert changed > 150
    assert add_typos("abc", 0.0, np.random.default_rng(0)) == "abc"


def test_token_augmentation_keeps_the_special_tokens():
    rng = np.random.default_rng(0)
    ids = np.array([101, 5, 6, 7, 8, 9, 102])
    for _ in range(50):
        out = drop_and_swap_tokens(ids, 0.3, rng)
        assert out[0] == 101 and out[-1] == 102 and 3 <= len(out) <= len(ids)
        assert set(out[1:-1]) <= {5, 6, 7, 8, 9}
    assert drop_and_swap_tokens(ids, 0.0, rng) is ids


def test_every_technique_together_trains_and_reports_robustness(tiny_model, tiny_csv):
    label_names, pad_id, data = encoded_tiny_data(tiny_model, tiny_csv, 400, 100, noisy_rate=0.1)
    settings = TrialSettings(str(tiny_model), label_names, pad_id, max_epochs=5,
                             objective="val_f1_macro", mode="max", num_threads=1)
    hyperparameters = Hyperparameters(learning_rate=5e-3, batch_size=16, unfreeze_depth=2, layer_lr_decay=0.8,
                                      unfreeze_every=1, class_balance="oversample", augment_prob=0.1)
    reports: list[dict] = []
    fine_tune(settings, hyperparameters, data, reports.append)
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4, 5]
    last = reports[-1]
    assert 0 <= last["val_noisy_accuracy"] <= 1 and 0 <= last["val_noisy_f1_macro"] <= 1
    assert {f"val_f1_class.{name}" for name in label_names} <= set(last)
    assert max(r["val_f1_macro"] for r in reports) > 0.5  # it still learns the toy task


@pytest.mark.parametrize("change, message", [
    ({"objective": {"metric": "val_noisy_accuracy"}}, r"^objective\.metric: 'val_noisy_accuracy' is invalid: .* set data\.noisy_val_rate"),
    ({"search_space": {**TINY_SPACE, "class_balance": {"type": "categorical", "choices": ["none", "smote"]}}},
     r"^search_space\.class_balance: .* class_balance takes none, weighted_loss, oversample, got \['smote'\]"),
])
def test_technique_settings_are_validated(tmp_path, change, message):
    raw = {"name": "t", "model": "m", "data": {"source": "d.csv"}, "search_space": TINY_SPACE, **change}
    with pytest.raises(ConfigError, match=message):
        parse_sweep(raw, tmp_path)
