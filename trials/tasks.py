"""Task types. The fine-tuning loop (:mod:`trials.finetune`) is one for every task; a task
supplies what differs: the model head, how rows become batches, and the augmentation.

``TASKS`` maps the sweep file's ``task`` to its class; :mod:`trials.task_specs` says which
hyperparameters each understands and which metrics its trials report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from trials import data as text_data
from trials import images, text_generation
from trials.augment import drop_and_swap_tokens
from trials.hyperparameters import Hyperparameters
from trials.lora import with_method
from trials.model import load_classifier
from trials.task_specs import IMAGE_CLASSIFICATION, TASK_SPECS, TEXT_CLASSIFICATION, TEXT_GENERATION


class Batching(Protocol):
    """What the training loop asks of a task once the model is built: batches of rows, augmentation,
    collation. A task is one; so are its cached inputs (:class:`trials.frozen_cache.CachedInputs`)."""

    def train_batches(self, split, batch_size: int, rng: np.random.Generator, rows: np.ndarray | None = None) -> Iterator[np.ndarray]: ...

    def eval_batches(self, split, batch_size: int) -> Iterator[np.ndarray]: ...

    def augmentation(self, hyperparameters: Hyperparameters, rng: np.random.Generator) -> Callable | None: ...

    def collate(self, split, rows: np.ndarray, transform: Callable | None = None) -> dict[str, torch.Tensor]: ...


class Task(Batching, Protocol):
    hyperparameters: ClassVar[tuple[str, ...]]
    metrics: ClassVar[tuple[str, ...]]
    hidden_input: ClassVar[str]  # the model's input that takes hidden states (trials.frozen_cache)

    @classmethod
    def from_settings(cls, settings) -> Task: ...

    def load_model(self, hyperparameters: Hyperparameters) -> nn.Module:
        """The pre-trained model with a fresh head and, with ``method: lora``, its adapters."""


@dataclass(frozen=True)
class TextClassification:
    """Token ids in (tokenised once by the sweep), one label out; length-bucketed, dynamically
    padded batches; token drop/swap augmentation."""

    model_path: str
    label_names: list[str]
    pad_token_id: int

    hyperparameters: ClassVar[tuple[str, ...]] = TASK_SPECS[TEXT_CLASSIFICATION].hyperparameters
    metrics: ClassVar[tuple[str, ...]] = TASK_SPECS[TEXT_CLASSIFICATION].metrics
    hidden_input: ClassVar[str] = "inputs_embeds"

    @classmethod
    def from_settings(cls, settings) -> TextClassification:
        return cls(settings.model_path, settings.label_names, settings.pad_token_id)

    def load_model(self, hyperparameters: Hyperparameters) -> nn.Module:
        return with_method(load_classifier(self.model_path, self.label_names, hyperparameters.dropout), hyperparameters)

    def train_batches(self, split, batch_size, rng, rows=None):
        return text_data.train_batches(split, batch_size, rng, rows=rows)

    def eval_batches(self, split, batch_size):
        return text_data.eval_batches(split, batch_size)

    def augmentation(self, hyperparameters, rng):
        if hyperparameters.augment_prob <= 0:
            return None
        return lambda ids: drop_and_swap_tokens(ids, hyperparameters.augment_prob, rng)

    def collate(self, split, rows, transform=None):
        return text_data.collate(split, rows, self.pad_token_id, transform)


@dataclass(frozen=True)
class ImageClassification:
    """Pixels in (resized and cropped once by the sweep), one label out; ``transformers`` vision
    models (ViT, ResNet, ConvNeXt, ...); flip and random-crop augmentation."""

    model_path: str
    label_names: list[str]

    hyperparameters: ClassVar[tuple[str, ...]] = TASK_SPECS[IMAGE_CLASSIFICATION].hyperparameters
    metrics: ClassVar[tuple[str, ...]] = TASK_SPECS[IMAGE_CLASSIFICATION].metrics
    hidden_input: ClassVar[str] = "pixel_values"

    @classmethod
    def from_settings(cls, settings) -> ImageClassification:
        return cls(settings.model_path, settings.label_names)

    def load_model(self, hyperparameters: Hyperparameters) -> nn.Module:
        from transformers import AutoModelForImageClassification

        model = load_classifier(self.model_path, self.label_names, hyperparameters.dropout, AutoModelForImageClassification)
        return with_method(model, hyperparameters)

    def train_batches(self, split, batch_size, rng, rows=None):
        return images.shuffled_batches(len(split), batch_size, rng, rows)

    def eval_batches(self, split, batch_size):
        return images.ordered_batches(len(split), batch_size)

    def augmentation(self, hyperparameters, rng):
        if hyperparameters.augment_prob <= 0:
            return None
        return lambda image: images.flip_and_crop(image, hyperparameters.augment_prob, hyperparameters.image_augment, rng)

    def collate(self, split, rows, transform=None):
        return images.collate(split, rows, transform)


@dataclass(frozen=True)
class TextGeneration:
    """Prompt and response token ids in (tokenised once by the sweep), the next token out; the
    loss counts response tokens only; length-bucketed, dynamically padded batches. Unlike the
    classifiers it has its own ``loss`` and ``evaluate`` (loss, perplexity, generation scores)."""

    model_path: str
    pad_token_id: int
    max_new_tokens: int = 32
    generation_samples: int = 32

    hyperparameters: ClassVar[tuple[str, ...]] = TASK_SPECS[TEXT_GENERATION].hyperparameters
    metrics: ClassVar[tuple[str, ...]] = TASK_SPECS[TEXT_GENERATION].metrics
    hidden_input: ClassVar[str] = "inputs_embeds"

    @classmethod
    def from_settings(cls, settings) -> TextGeneration:
        return cls(settings.model_path, settings.pad_token_id, settings.max_new_tokens, settings.generation_samples)

    def load_model(self, hyperparameters: Hyperparameters) -> nn.Module:
        return with_method(text_generation.load_causal_lm(self.model_path, hyperparameters.dropout), hyperparameters)

    def train_batches(self, split, batch_size, rng, rows=None):
        return text_data.train_batches(split, batch_size, rng, rows=rows)

    def eval_batches(self, split, batch_size):
        return text_data.eval_batches(split, batch_size)

    def augmentation(self, hyperparameters, rng):
        return None

    def collate(self, split, rows, transform=None):
        return text_generation.collate(split, rows, self.pad_token_id)

    def loss(self, loss_fn) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``loss_fn`` (cross-entropy, label smoothing included) applied to next-token predictions."""
        return lambda logits, labels: text_generation.shifted_loss(logits, labels, loss_fn)

    def evaluate(self, model: nn.Module, split, batch_size: int, device, precision=None) -> dict[str, float]:
        return text_generation.evaluate(model, split, batch_size=batch_size, pad_id=self.pad_token_id, model_path=self.model_path, max_new_tokens=self.max_new_tokens,
                                        samples=self.generation_samples, device=device, precision=precision)


TASKS: dict[str, type[Task]] = {
    TEXT_CLASSIFICATION: TextClassification,
    IMAGE_CLASSIFICATION: ImageClassification,
    TEXT_GENERATION: TextGeneration,
}


def task_for(settings) -> Task:
    """The task that :class:`trials.finetune.TrialSettings` names, ready to build models and batches."""
    if settings.task not in TASKS:
        raise ValueError(f"unknown task {settings.task!r}; valid names are {', '.join(TASKS)}")
    return TASKS[settings.task].from_settings(settings)
