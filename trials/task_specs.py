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

TaskName = Literal["text-classification", "image-classification"]
TEXT_CLASSIFICATION: TaskName = "text-classification"
IMAGE_CLASSIFICATION: TaskName = "image-classification"


@dataclass(frozen=True)
class TaskSpec:
    hyperparameters: tuple[str, ...]
    metrics: tuple[str, ...]
    data_keys: frozenset[str]  # keys of the sweep's data section that only this task reads


TASK_SPECS: dict[TaskName, TaskSpec] = {
    TEXT_CLASSIFICATION: TaskSpec(
        hyperparameters=tuple(name for name in HYPERPARAMETER_NAMES if name != "image_augment"),
        metrics=METRIC_NAMES,
        data_keys=frozenset({"text_column", "max_length", "noisy_val_rate"}),
    ),
    IMAGE_CLASSIFICATION: TaskSpec(
        hyperparameters=HYPERPARAMETER_NAMES,
        metrics=tuple(name for name in METRIC_NAMES if not name.startswith("val_noisy_")),
        data_keys=frozenset({"image_column"}),
    ),
}
