"""What a search tunes in the built-in fine-tuning loop (:mod:`trials.finetune`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal, get_args

ClassBalance = Literal["none", "weighted_loss", "oversample"]
ImageAugment = Literal["flip", "crop", "flip_crop"]
Method = Literal["full", "lora"]
LoraTargets = Literal["attention", "attention_mlp", "all_linear"]
CLASS_BALANCE: tuple[ClassBalance, ...] = get_args(ClassBalance)
IMAGE_AUGMENT: tuple[ImageAugment, ...] = get_args(ImageAugment)
METHODS: tuple[Method, ...] = get_args(Method)
LORA_TARGETS: tuple[LoraTargets, ...] = get_args(LoraTargets)


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
    class_balance: ClassBalance = "none"  # "none", "weighted_loss" (inverse class frequency) or "oversample"
    augment_prob: float = 0.0  # chance to augment each training example (texts: drop/swap tokens; images: see image_augment)
    image_augment: ImageAugment = "flip_crop"  # images: which augmentations augment_prob applies
    method: Method = "full"  # "full": train the layers themselves; "lora": train low-rank adapters beside them (trials.lora)
    lora_rank: int = 8
    lora_alpha: float | None = None  # None: lora_alpha_ratio * lora_rank
    lora_alpha_ratio: float = 2.0
    lora_dropout: float = 0.0
    lora_targets: LoraTargets = "all_linear"  # which linear modules of each adapted layer get adapters

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Hyperparameters:
        unknown = sorted(set(values) - set(HYPERPARAMETER_NAMES))
        if unknown:
            raise ValueError(f"unknown hyperparameters {unknown}; valid names are {list(HYPERPARAMETER_NAMES)}")
        hyperparameters = cls(**values)  # type: ignore[arg-type]
        for name, choices in CHOICES.items():
            if getattr(hyperparameters, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(hyperparameters, name)!r}")
        for name, domain in DOMAINS.items():
            value = getattr(hyperparameters, name)
            if not (value is None and domain.nullable) and value not in domain:
                raise ValueError(f"{name} must be {domain}, got {value!r}")
        return hyperparameters


HYPERPARAMETER_NAMES = tuple(f.name for f in fields(Hyperparameters))

LORA_HYPERPARAMETERS = tuple(name for name in HYPERPARAMETER_NAMES if name.startswith("lora_"))
"""The settings of ``method: lora``; a full fine-tune ignores them."""

CHOICES: dict[str, tuple[str, ...]] = {
    "class_balance": CLASS_BALANCE, "image_augment": IMAGE_AUGMENT, "method": METHODS, "lora_targets": LORA_TARGETS,
}
"""Hyperparameters that take one of a few names."""


@dataclass(frozen=True)
class Domain:
    """The values of a numeric hyperparameter with which a trial can run: an interval of real or
    whole numbers, each end closed (the bound itself is valid), open (it is not) or absent.
    Like an Optuna distribution, but the limits of what is valid rather than of what is searched:
    the sweep file's check (:mod:`orchestrator.sweep.hyperparameter_checks`) holds every value a search
    space can produce to it, so a trial never starts with a value that cannot run."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    nullable: bool = False  # None is valid too (the field's default behaviour: see Hyperparameters)

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        return self.above_low(float(value)) and self.below_high(float(value))

    def above_low(self, value: float) -> bool:
        return self.low is None or (value > self.low if self.low_open else value >= self.low)

    def below_high(self, value: float) -> bool:
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def interval(self) -> str:
        """``in [0, 1)``, ``> 0``, ``>= 1``; empty without bounds."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return ""

    def __str__(self) -> str:
        """What a value must be: ``in [0, 1)``, ``> 0``, ``a whole number >= 1``."""
        return f"a whole number {self.interval()}".strip() if self.integer else self.interval() or "a number"


DOMAINS: dict[str, Domain] = {
    "learning_rate": Domain(low=0, low_open=True),
    "batch_size": Domain(low=1, integer=True),
    "unfreeze_depth": Domain(low=0, integer=True, nullable=True),  # its upper bound is the model's depth (checked per model)
    "weight_decay": Domain(low=0),
    "dropout": Domain(low=0, high=1, high_open=True, nullable=True),
    "warmup_ratio": Domain(low=0, high=1, high_open=True),
    "label_smoothing": Domain(low=0, high=1, high_open=True),
    "max_grad_norm": Domain(low=0),  # 0 turns gradient clipping off
    "layer_lr_decay": Domain(low=0, high=1, low_open=True),
    "unfreeze_every": Domain(low=0, integer=True),  # 0: every layer trains from the start
    "augment_prob": Domain(low=0, high=1),
    "lora_rank": Domain(low=1, integer=True),
    "lora_alpha": Domain(low=0, low_open=True, nullable=True),
    "lora_alpha_ratio": Domain(low=0, low_open=True),
    "lora_dropout": Domain(low=0, high=1, high_open=True),
}
"""The valid values of each numeric hyperparameter, the one place they are declared."""


SEED_KEY = "training_seed"
"""A trial config key that overrides the sweep's training seed for one trial (a confirmation run)."""
