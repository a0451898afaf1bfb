"""The built-in tasks as a sweep file sees them: each one's name, the hyperparameters it
understands, the metrics its trials report and the data keys only it reads.

Free of torch and transformers, so checking a sweep file and the inspection commands load no
training code; :mod:`trials.tasks` implements each task named here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trials.hyperparameters import HYPERPARAMETER_NAMES
from trials.metrics import METRIC_NAMES

TaskName = Literal["text-classification", "image-classification", "text-generation"]
TEXT_CLASSIFICATION: TaskName = "text-classification"
IMAGE_CLASSIFICATION: TaskName = "image-classification"
TEXT_GENERATION: TaskName = "text-generation"

GENERATION_METRICS = (
    "val_loss", "val_perplexity", "val_exact_match", "val_token_f1",
    "train_loss", "samples_per_s", "trainable_params", "setup_seconds", "epoch_seconds",
)
"""What a text-generation trial reports: loss and perplexity on the response tokens, and exact
match and token F1 of greedy generations on a fixed sample of validation prompts."""

MINIMIZED_METRICS = frozenset({"val_loss", "val_perplexity", "train_loss", "trainable_params", "setup_seconds", "epoch_seconds"})
"""Metrics where lower is better (objective mode ``min``); every other metric is maximised."""


@dataclass(frozen=True)
class TaskSpec:
    hyperparameters: tuple[str, ...]
    metrics: tuple[str, ...]
    data_keys: frozenset[str]  # keys of the sweep's data section that this task reads and some other task does not
    pipeline: str  # the transformers pipeline task a registered model serves
    labelled: bool = True  # rows carry a class label (a majority baseline, labels to list); False: prompt/response pairs


TASK_SPECS: dict[TaskName, TaskSpec] = {
    TEXT_CLASSIFICATION: TaskSpec(
        hyperparameters=tuple(name for name in HYPERPARAMETER_NAMES if name != "image_augment"),
        metrics=METRIC_NAMES,
        data_keys=frozenset({"text_column", "label_column", "max_length", "noisy_val_rate"}),
        pipeline="text-classification",
    ),
    IMAGE_CLASSIFICATION: TaskSpec(
        hyperparameters=HYPERPARAMETER_NAMES,
        metrics=tuple(name for name in METRIC_NAMES if not name.startswith("val_noisy_")),
        data_keys=frozenset({"image_column", "label_column"}),
        pipeline="image-classification",
    ),
    TEXT_GENERATION: TaskSpec(
        hyperparameters=tuple(name for name in HYPERPARAMETER_NAMES if name not in ("image_augment", "class_balance", "augment_prob")),
        metrics=GENERATION_METRICS,
        data_keys=frozenset({"prompt_column", "response_column", "messages_column", "max_length", "max_new_tokens", "generation_samples"}),
        pipeline="text-generation",
        labelled=False,
    ),
}
