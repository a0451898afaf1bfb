"""Classification metrics computed from a confusion matrix (no extra dependency)."""

from __future__ import annotations

import re

import numpy as np

METRIC_NAMES = (
    "val_loss",
    "val_accuracy",
    "val_precision_macro",
    "val_recall_macro",
    "val_f1_macro",
    "train_loss",
    "samples_per_s",
    "val_noisy_accuracy",
    "val_noisy_f1_macro",
    "trainable_params",
    "setup_seconds",
    "epoch_seconds",
)
"""Every metric a trial reports each epoch; an objective must be one of these. The two
``val_noisy_*`` are measured on the validation texts with typos (``data.noisy_val_rate``);
``setup_seconds`` is the time from the trial's start to its first step (model load, transfer to
the device), ``epoch_seconds`` one epoch's training and evaluation."""

PER_CLASS_F1 = "val_f1_class."
"""Prefix of the per-class F1 metrics, e.g. ``val_f1_class.negative``."""


def per_class_f1(labels: np.ndarray, predictions: np.ndarray, label_names: list[str]) -> dict[str, float]:
    num_classes = len(label_names)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    true_positives = np.diag(confusion).astype(float)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)
    f1 = np.divide(2 * true_positives, denominator, out=np.zeros(num_classes), where=denominator > 0)
    return {PER_CLASS_F1 + re.sub(r"[^A-Za-z0-9_\-. /]", "_", str(name)): float(value) for name, value in zip(label_names, f1, strict=True)}


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1 over ``num_classes`` classes.

    A class with no predictions (or no examples) contributes 0 to the macro averages.
    """
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    true_positives = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(true_positives, actual, out=np.zeros(num_classes), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_classes), where=denominator > 0)
    return {
        "val_accuracy": float(true_positives.sum() / max(len(labels), 1)),
        "val_precision_macro": float(precision.mean()),
        "val_recall_macro": float(recall.mean()),
        "val_f1_macro": float(f1.mean()),
    }


def majority_baseline(train_labels: np.ndarray, val_labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Metrics of always predicting the most frequent training class on the validation split."""
    majority = int(np.bincount(train_labels, minlength=num_classes).argmax())
    return classification_metrics(val_labels, np.full_like(val_labels, majority), num_classes)
