"""The fine-tuning loop of one trial: train, evaluate every epoch, report, stop early."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup
from transformers.utils import logging as transformers_logging

from trials.data import EncodedSplit, collate, eval_batches, train_batches
from trials.metrics import classification_metrics
from trials.model import apply_unfreeze_depth, count_trainable, encoder_layers, load_classifier, pick_device

Report = Callable[[dict], None]
"""Receives one dict of metrics per epoch. The last dict of a trial that ran to its end has ``is_final = 1``."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the trial cannot continue."""


@dataclass(frozen=True)
class Hyperparameters:
    """What a search can tune. Every field has a default, so a search space may name any subset."""

    learning_rate: float = 5e-5
    batch_size: int = 32
    unfreeze_depth: int | None = None  # None trains every encoder layer
    weight_decay: float = 0.0
    dropout: float | None = None  # None keeps the model's own dropout
    warmup_ratio: float = 0.0
    label_smoothing: float = 0.0
    max_grad_norm: float = 1.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> "Hyperparameters":
        unknown = sorted(set(values) - set(HYPERPARAMETER_NAMES))
        if unknown:
            raise ValueError(f"unknown hyperparameters {unknown}; valid names are {list(HYPERPARAMETER_NAMES)}")
        return cls(**values)  # type: ignore[arg-type]


HYPERPARAMETER_NAMES = tuple(f.name for f in fields(Hyperparameters))


@dataclass(frozen=True)
class TrialSettings:
    """Fixed for every trial of a sweep."""

    model_path: str
    label_names: list[str]
    pad_token_id: int
    max_epochs: int
    objective: str
    mode: str  # "max" or "min"
    seed: int = 0
    patience: int | None = None  # epochs without improvement before stopping; None never stops early
    eval_batch_size: int = 64
    num_threads: int | None = None
    use_gpu: bool = False


@dataclass(frozen=True)
class TrialData:
    train: EncodedSplit
    val: EncodedSplit


@dataclass
class _EarlyStopping:
    mode: str
    patience: int | None
    best: float = field(default=math.nan)
    stale_epochs: int = 0

    def update(self, value: float) -> bool:
        """Record one epoch's value; return True when training should stop."""
        improved = math.isnan(self.best) or (value > self.best if self.mode == "max" else value < self.best)
        if improved:
            self.best, self.stale_epochs = value, 0
        else:
            self.stale_epochs += 1
        return self.patience is not None and self.stale_epochs >= self.patience


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fine_tune(settings: TrialSettings, hyperparameters: Hyperparameters, data: TrialData, report: Report) -> dict:
    """Fine-tune one configuration; call ``report`` after every epoch; return the last metrics."""
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    seed_everything(settings.seed)
    device = pick_device(settings.use_gpu)

    model = load_classifier(settings.model_path, settings.label_names, hyperparameters.dropout)
    depth = hyperparameters.unfreeze_depth
    apply_unfreeze_depth(model, len(encoder_layers(model)) if depth is None else depth)
    model.to(device)

    optimizer = _adamw(model, hyperparameters)
    steps_per_epoch = math.ceil(len(data.train) / hyperparameters.batch_size)
    total_steps = steps_per_epoch * settings.max_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(hyperparameters.warmup_ratio * total_steps), total_steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hyperparameters.label_smoothing)
    rng = np.random.default_rng(settings.seed)
    stopping = _EarlyStopping(settings.mode, settings.patience)
    trainable = count_trainable(model)

    metrics: dict = {}
    for epoch in range(1, settings.max_epochs + 1):
        started = time.perf_counter()
        train_loss = _train_epoch(model, data.train, hyperparameters, optimizer, scheduler, loss_fn, rng, settings.pad_token_id, device, epoch)
        samples_per_s = len(data.train) / (time.perf_counter() - started)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "samples_per_s": samples_per_s,
            "trainable_params": trainable,
            **evaluate(model, data.val, settings.eval_batch_size, settings.pad_token_id, len(settings.label_names), device),
        }
        stop = stopping.update(metrics[settings.objective]) or epoch == settings.max_epochs
        metrics["is_final"] = int(stop)
        report(metrics)
        if stop:
            break
    return metrics


def _adamw(model: nn.Module, hyperparameters: Hyperparameters) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": hyperparameters.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=hyperparameters.learning_rate)


_FINITE_CHECK_EVERY = 25  # steps between loss checks: each check waits for the GPU, so not every step


def _train_epoch(model, split, hyperparameters, optimizer, scheduler, loss_fn, rng, pad_id, device, epoch) -> float:
    model.train()
    loss_sum = torch.zeros((), device=device)
    count = 0
    for step, rows in enumerate(train_batches(split, hyperparameters.batch_size, rng), start=1):
        batch = {key: value.to(device, non_blocking=True) for key, value in collate(split, rows, pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = loss_fn(logits, batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if hyperparameters.max_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), hyperparameters.max_grad_norm)
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * len(rows)
        count += len(rows)
        if step % _FINITE_CHECK_EVERY == 0:
            _check_finite(loss_sum, epoch, step)
    _check_finite(loss_sum, epoch, step)
    return loss_sum.item() / max(count, 1)


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss_sum):
        raise NonFiniteLossError(
            f"training loss became {loss_sum.item()} by epoch {epoch}, step {step}; "
            "a lower learning_rate or max_grad_norm usually avoids this"
        )


@torch.inference_mode()
def evaluate(model: nn.Module, split: EncodedSplit, batch_size: int, pad_id: int, num_classes: int, device) -> dict[str, float]:
    """Validation loss (plain cross-entropy), accuracy and macro precision/recall/F1."""
    model.eval()
    loss_sum = 0.0
    predictions = np.empty(len(split), dtype=np.int64)
    for rows in eval_batches(split, batch_size):
        batch = {key: value.to(device) for key, value in collate(split, rows, pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss_sum += nn.functional.cross_entropy(logits, batch["labels"], reduction="sum").item()
        predictions[rows] = logits.argmax(dim=-1).cpu().numpy()
    return {"val_loss": loss_sum / max(len(split), 1), **classification_metrics(split.labels, predictions, num_classes)}
