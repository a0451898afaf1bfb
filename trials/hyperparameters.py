"""What a search tunes in the built-in fine-tuning loop (:mod:`trials.finetune`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

CLASS_BALANCE = ("none", "weighted_loss", "oversample")
IMAGE_AUGMENT = ("flip", "crop", "flip_crop")


@dataclass(frozen=True)
class Hyperparameters:
    """What a search can tune. Every field has a default, so a search space may name any subset."""

    learning_rate: float = 5e-5
    batch_size: int = 32
    unfreeze_depth: int | None = None  # None trains every encoder layer (or stage)
    weight_decay: float = 0.0
    dropout: float | None = None  # None keeps the model's own dropout
    warmup_ratio: float = 0.0
    label_smoothing: float = 0.0
    max_grad_norm: float = 1.0
    layer_lr_decay: float = 1.0  # each layer further down learns at this fraction of the one above (1.0: one rate)
    unfreeze_every: int = 0  # gradual unfreezing: one more layer trains every this many epochs (0: all from the start)
    class_balance: str = "none"  # "none", "weighted_loss" (inverse class frequency) or "oversample"
    augment_prob: float = 0.0  # chance to augment each training example (texts: drop/swap tokens; images: see image_augment)
    image_augment: str = "flip_crop"  # images: which augmentations augment_prob applies

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> "Hyperparameters":
        unknown = sorted(set(values) - set(HYPERPARAMETER_NAMES))
        if unknown:
            raise ValueError(f"unknown hyperparameters {unknown}; valid names are {list(HYPERPARAMETER_NAMES)}")
        hyperparameters = cls(**values)  # type: ignore[arg-type]
        for name, choices in CHOICES.items():
            if getattr(hyperparameters, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(hyperparameters, name)!r}")
        return hyperparameters


HYPERPARAMETER_NAMES = tuple(f.name for f in fields(Hyperparameters))

CHOICES: dict[str, tuple[str, ...]] = {"class_balance": CLASS_BALANCE, "image_augment": IMAGE_AUGMENT}
"""Hyperparameters that take one of a few names."""

SEED_KEY = "training_seed"
"""A trial config key that overrides the sweep's training seed for one trial (a confirmation run)."""
