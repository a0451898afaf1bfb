"""The fine-tuning loop of one trial: train, evaluate every epoch, report, stop early.

One loop for every task type: the task (:mod:`trials.tasks`) supplies the model and turns rows
into batches; everything else (AdamW groups, warmup, label smoothing, class balance, early
stopping, checkpoints, out-of-memory retries, metrics) is here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers.utils import logging as transformers_logging

from trials import checkpoint, frozen_cache
from trials.checkpoint import TrainingState
from trials.data import EncodedSplit, balanced_rows, stratified_rows
from trials.frozen_cache import FrozenCache
from trials.hyperparameters import CLASS_BALANCE, HYPERPARAMETER_NAMES, Hyperparameters  # noqa: F401 (re-exported)
from trials.images import ImageSplit
from trials.lora import adapter_groups, is_adapted
from trials.metrics import classification_metrics, per_class_f1
from trials.model import FromBoundary, apply_unfreeze_depth, count_trainable, encoder_layers, layer_groups, pick_device
from trials.objective import Mode
from trials.precision import Precision, PrecisionName, enable_gradient_checkpointing, precision_for
from trials.result_keys import EPOCH, FINAL, FROZEN_CACHE, INTERIM, STEP, WARMING_UP
from trials.stopping import EarlyStopping
from trials.task_specs import TEXT_CLASSIFICATION, TaskName
from trials.tasks import Batching, Task, task_for
from trials.text_generation import GenerationSplit

Report = Callable[..., None]
"""Receives one dict of metrics per evaluation (``evals_per_epoch`` per epoch; those within an
epoch carry ``interim = 1``). The last dict of a trial that ran to its end has ``is_final = 1``.
With ``TrialSettings.checkpoint`` an epoch's last report also receives ``checkpoint_dir=``: a
folder holding the training state after that epoch, to keep until the report returns."""


logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the trial cannot continue."""


@dataclass(frozen=True)
class TrialSettings:
    """Fixed for every trial of a sweep."""

    model_path: str
    label_names: list[str]
    pad_token_id: int
    max_epochs: int
    objective: str
    mode: Mode
    seed: int = 0
    patience: int | None = None  # epochs without improvement before stopping; None never stops early
    eval_batch_size: int = 64
    num_threads: int | None = None
    use_gpu: bool = False
    checkpoint: bool = False  # hand the training state to ``report`` after every epoch but the last
    task: TaskName = TEXT_CLASSIFICATION  # a name in trials.tasks.TASKS
    keep_best_model: bool = False  # also hand over the best epoch's trained parameters, the last report included
    evals_per_epoch: int = 1  # evaluate and report this many times per epoch, evenly spaced, the last at its end
    quick_val_size: int | None = None  # evaluations within an epoch score a fixed stratified subset of this many rows
    precision: PrecisionName = "auto"
    gradient_checkpointing: bool = False
    max_new_tokens: int = 32  # text-generation: the length cap of the greedy generations scored every epoch
    generation_samples: int = 32  # text-generation: how many validation prompts (a fixed sample) are generated from


@dataclass(frozen=True)
class TrialData:
    train: EncodedSplit | ImageSplit | GenerationSplit | frozen_cache.HiddenStates
    val: EncodedSplit | ImageSplit | GenerationSplit | frozen_cache.HiddenStates
    val_noisy: EncodedSplit | frozen_cache.HiddenStates | None = None  # the validation texts with typos, for the robustness metrics
    frozen: FrozenCache | None = None  # hidden states of these splits at the frozen layers' boundaries (trials.frozen_cache)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fine_tune(settings: TrialSettings, hyperparameters: Hyperparameters, data: TrialData, report: Report, resume: dict | None = None) -> dict:
    """Fine-tune one configuration; call ``report`` after every epoch; return the last metrics.

    ``resume`` is a state saved by an earlier attempt of this trial (:func:`trials.checkpoint.load`):
    training continues after its last finished epoch.
    """
    entered = time.perf_counter()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    seed_everything(settings.seed)
    device = pick_device(settings.use_gpu)
    task = task_for(settings)

    model = task.load_model(hyperparameters)
    layers = len(encoder_layers(model))
    depth = layers if hyperparameters.unfreeze_depth is None else hyperparameters.unfreeze_depth
    if is_adapted(model):  # adapters on the top ``depth`` layers only: those below stay as pre-trained, like frozen ones
        groups = adapter_groups(model)
    else:
        apply_unfreeze_depth(model, depth)
        groups = layer_groups(model, depth)
    boundary, cache_use = frozen_cache.plan(data.frozen, hyperparameters, depth, layers, settings.max_epochs)
    model.to(device)
    precision = precision_for(settings.precision, device)
    if settings.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    runner, batching, data = _from_cache(model, task, data, boundary, device=device, batch_size=settings.eval_batch_size)

    optimizer = _adamw(groups, hyperparameters)
    steps_per_epoch = math.ceil(len(data.train) / hyperparameters.batch_size)
    total_steps = steps_per_epoch * settings.max_epochs  # the schedule spans max_epochs: a trial stopped early is a prefix of the full one
    warmup_steps = int(hyperparameters.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_warmup_then_linear_decay, warmup_steps=warmup_steps, total_steps=total_steps))
    loss_fn = nn.CrossEntropyLoss(
        weight=_class_weights(data.train.labels, len(settings.label_names), device) if hyperparameters.class_balance == "weighted_loss" else None,
        label_smoothing=hyperparameters.label_smoothing,
    )
    if hasattr(task, "loss"):  # text generation: the loss of each response token's next-token prediction
        loss_fn = task.loss(loss_fn)
    rng = np.random.default_rng(settings.seed)
    progress = TrainingState(epoch=0, best=math.nan, stale_epochs=0, micro_batch_size=hyperparameters.batch_size)
    if resume is not None:
        progress = checkpoint.restore(resume, model, optimizer, scheduler, rng)
    stopping = EarlyStopping(settings.mode, settings.patience, progress.best, progress.stale_epochs)
    best_model = resume.get("best_model") if resume is not None else None
    trainable = count_trainable(model)

    evals = settings.evals_per_epoch
    interim_val = _interim_split(data.val, settings.quick_val_size) if evals > 1 else data.val
    metrics: dict = {}
    setup_seconds = time.perf_counter() - entered
    for epoch in range(progress.epoch + 1, settings.max_epochs + 1):
        started = time.perf_counter()
        _unfreeze_for_epoch(groups, hyperparameters.unfreeze_every, epoch)
        segments = _train_epoch(
            runner, batching, data.train, hyperparameters, micro_batch_size=progress.micro_batch_size, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn, rng=rng, device=device, epoch=epoch, evals_per_epoch=evals, precision=precision,
        )
        for part, (train_loss, progress.micro_batch_size, trained_rows, train_seconds) in enumerate(segments, start=1):
            end_of_epoch = part == evals
            metrics = {
                EPOCH: epoch - 1 + part / evals if evals > 1 else epoch,
                STEP: (epoch - 1) * evals + part,
                "train_loss": train_loss,
                "lr": scheduler.get_last_lr()[0],  # the head's rate now, on the schedule
                "samples_per_s": trained_rows / max(train_seconds, 1e-9),
                "trainable_params": trainable,
                "micro_batch_size": progress.micro_batch_size,
                FROZEN_CACHE: cache_use,
                **evaluate(runner, batching, data.val if end_of_epoch else interim_val, batch_size=settings.eval_batch_size, label_names=settings.label_names, device=device, precision=precision),
                WARMING_UP: int(scheduler.last_epoch < warmup_steps),
            }
            if not end_of_epoch:
                report({**metrics, INTERIM: 1, FINAL: 0})
                continue
            if data.val_noisy is not None:
                noisy = evaluate(runner, batching, data.val_noisy, batch_size=settings.eval_batch_size, label_names=settings.label_names, device=device, precision=precision)
                metrics.update(val_noisy_accuracy=noisy["val_accuracy"], val_noisy_f1_macro=noisy["val_f1_macro"])
            metrics.update(setup_seconds=setup_seconds, epoch_seconds=time.perf_counter() - started)
        stop = stopping.update(metrics[settings.objective]) or epoch == settings.max_epochs
        if settings.keep_best_model and stopping.stale_epochs == 0:
            best_model = checkpoint.trained_weights(model)
        metrics[FINAL] = int(stop)
        progress.epoch, progress.best, progress.stale_epochs = epoch, stopping.best, stopping.stale_epochs
        if settings.checkpoint and not stop:
            with tempfile.TemporaryDirectory(prefix="hpo-state-") as folder:
                checkpoint.save(Path(folder), model, optimizer, scheduler, rng, state=progress, best_model=best_model)
                report(metrics, checkpoint_dir=folder)
        elif stop and best_model is not None:
            with tempfile.TemporaryDirectory(prefix="hpo-best-") as folder:
                checkpoint.save_best_model(Path(folder), best_model)
                report(metrics, checkpoint_dir=folder)
        else:
            report(metrics)
        if stop:
            break
    return metrics


def _from_cache(model: nn.Module, task: Task, data: TrialData, boundary: int | None, *, device, batch_size: int) -> tuple[nn.Module, Batching, TrialData]:
    """What the trial runs and on what: the whole model on the inputs, or (``boundary`` given) the
    layers above it on the cached hidden states there (built now by ``model`` if no trial has built them)."""
    if boundary is None:
        return model, task, data
    cache = data.frozen
    if cache is None:
        raise ValueError("a boundary to start from needs the sweep's frozen-layer cache, and this trial has none")
    states = cache.states(boundary, model, task, {"train": data.train, "val": data.val, "val_noisy": data.val_noisy}, device=device, batch_size=batch_size)
    cached = TrialData(states.train, states.val, states.val_noisy)
    return FromBoundary(model, boundary), frozen_cache.CachedInputs(task, task.hidden_input), cached


def _warmup_then_linear_decay(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """The learning rate's factor at ``step``: up from 0 over the warm-up, then down to 0 at the end.
    transformers' ``get_linear_schedule_with_warmup``, the same arithmetic: importing it loads
    ``transformers.trainer_utils`` and with it peft, seconds of every trial worker's start."""
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup_steps)))


def _adamw(groups: list[list[nn.Parameter]], hyperparameters: Hyperparameters) -> torch.optim.Optimizer:
    """AdamW over every parameter that will train. Group ``i`` from the top (head, top layer, ...)
    learns at ``learning_rate * layer_lr_decay**i``; biases and norms get no weight decay."""
    param_groups = []
    for depth, parameters in enumerate(groups):
        lr = hyperparameters.learning_rate * hyperparameters.layer_lr_decay**depth
        decay = [p for p in parameters if p.ndim >= 2]
        no_decay = [p for p in parameters if p.ndim < 2]
        param_groups += [
            {"params": decay, "weight_decay": hyperparameters.weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr},
        ]
    on_cuda = any(p.is_cuda for parameters in groups for p in parameters)
    # fused: one kernel per step for all parameters instead of several per tensor; small models are launch-bound on GPUs
    return torch.optim.AdamW([group for group in param_groups if group["params"]], lr=hyperparameters.learning_rate, fused=on_cuda or None)


def _unfreeze_for_epoch(groups: list[list[nn.Parameter]], every: int, epoch: int) -> None:
    """Gradual unfreezing: the head and the top layer train first, one more layer every ``every``
    epochs (``every`` 0: all groups from the start)."""
    active = len(groups) if every <= 0 else min(len(groups), 1 + math.ceil(epoch / every))
    for index, group in enumerate(groups):
        for parameter in group:
            parameter.requires_grad = index < active


def _class_weights(labels: np.ndarray, num_classes: int, device) -> torch.Tensor:
    """Inverse class frequency, normalised so a balanced dataset gets weight 1 everywhere."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.divide(len(labels), num_classes * counts, out=np.zeros(num_classes), where=counts > 0)
    return torch.tensor(weights, dtype=torch.float32, device=device)


_FINITE_CHECK_EVERY = 25  # steps between loss checks: each check waits for the GPU, so not every step


def _evaluation_steps(steps_per_epoch: int, evals_per_epoch: int) -> list[int]:
    """The steps of an epoch after which the trial evaluates: ``evals_per_epoch`` evenly spaced
    points, the last at the epoch's end (fewer distinct points than asked only when the epoch has
    fewer steps; a point may then repeat)."""
    return [math.ceil(part * steps_per_epoch / evals_per_epoch) for part in range(1, evals_per_epoch + 1)]


def _interim_split(val, size: int | None):
    """What the evaluations within an epoch score: the validation split, or a fixed stratified
    subset of it (the same rows for every trial of the sweep, so their scores compare)."""
    return val if size is None or size >= len(val) else val.take(stratified_rows(val.labels, size))


def _train_epoch(model, task: Batching, split, hyperparameters, *, micro_batch_size, optimizer, scheduler, loss_fn, rng, device, epoch,
                 evals_per_epoch: int, precision: Precision) -> Iterator[tuple[float, int, int, float]]:
    """One pass over the training data, paused ``evals_per_epoch`` times (the last at its end):
    at each pause yield the mean loss of the epoch so far, the micro-batch size in use,
    the rows trained on and the seconds spent training so far; the caller evaluates and reports
    before the pass goes on."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    count = 0
    train_seconds = 0.0
    rows = balanced_rows(split.labels, rng) if hyperparameters.class_balance == "oversample" else None
    transform = task.augmentation(hyperparameters, rng)
    batches = list(task.train_batches(split, hyperparameters.batch_size, rng, rows=rows))
    step = 0
    for point in _evaluation_steps(len(batches), evals_per_epoch):
        resumed = time.perf_counter()
        while step < point:
            batch_rows = batches[step]
            step += 1
            while True:
                try:
                    batch_loss = _accumulate_gradients(model, task, split, batch_rows, micro_batch_size=micro_batch_size, loss_fn=loss_fn, device=device, optimizer=optimizer, precision=precision, transform=transform)
                    break
                except torch.OutOfMemoryError:
                    if micro_batch_size == 1:
                        raise
                    micro_batch_size = _halve_after_oom(micro_batch_size, device)
            if hyperparameters.max_grad_norm:
                precision.unscale(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), hyperparameters.max_grad_norm)
            precision.step(optimizer)
            scheduler.step()
            loss_sum += batch_loss * len(batch_rows)
            count += len(batch_rows)
            if step % _FINITE_CHECK_EVERY == 0:
                _check_finite(loss_sum, epoch, step)
        _check_finite(loss_sum, epoch, step)
        train_seconds += time.perf_counter() - resumed
        yield loss_sum.item() / max(count, 1), micro_batch_size, count, train_seconds
        model.train()  # the evaluation in between switched it to eval mode


def _accumulate_gradients(model, task: Batching, split, rows, *, micro_batch_size, loss_fn, device, optimizer, precision: Precision, transform=None) -> torch.Tensor:
    """Forward and backward one batch in chunks of ``micro_batch_size`` rows. Each chunk's loss is
    weighted by its share of the batch, so the gradient equals the whole batch's and the effective
    batch size is unchanged. Returns the batch's mean loss."""
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    for start in range(0, len(rows), micro_batch_size):
        chunk = rows[start : start + micro_batch_size]
        batch = {key: value.to(device, non_blocking=True) for key, value in task.collate(split, chunk, transform).items()}
        with precision.autocast():
            loss = forward_loss(model, batch, loss_fn) * (len(chunk) / len(rows))
        precision.backward(loss)
        total += loss.detach()
    return total


def forward_loss(model: nn.Module, batch: dict[str, torch.Tensor], loss_fn) -> torch.Tensor:
    return loss_fn(_logits(model, batch), batch["labels"])


def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's outputs for a batch from any task: every input but the labels goes in."""
    return model(**{key: value for key, value in batch.items() if key != "labels"}).logits


def _halve_after_oom(micro_batch_size: int, device: torch.device) -> int:
    """Out of accelerator memory: free what the failed step held and retry with half the rows per pass."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    smaller = max(1, micro_batch_size // 2)
    logger.warning("out of memory at %d rows per pass; retrying with %d and gradient accumulation", micro_batch_size, smaller)
    return smaller


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss_sum):
        raise NonFiniteLossError(
            f"training loss became {loss_sum.item()} by epoch {epoch}, step {step}; "
            "a lower learning_rate or max_grad_norm usually avoids this"
        )


def evaluate(model: nn.Module, task: Batching, split, *, batch_size: int, label_names: list[str], device, precision: Precision | None = None) -> dict[str, float]:
    """Validation loss (plain cross-entropy), accuracy, macro precision/recall/F1 and per-class F1;
    or the metrics of the task's own ``evaluate`` where it has one (text generation)."""
    if hasattr(task, "evaluate"):
        return task.evaluate(model, split, batch_size, device, precision)
    loss, predictions = predict(model, task, split, batch_size=batch_size, device=device, precision=precision)
    return {
        "val_loss": loss,
        **classification_metrics(split.labels, predictions, len(label_names)),
        **per_class_f1(split.labels, predictions, label_names),
    }


@torch.inference_mode()
def predict(model: nn.Module, task: Batching, split, *, batch_size: int, device, precision: Precision | None = None) -> tuple[float, np.ndarray]:
    """The mean cross-entropy over ``split`` and the predicted class of each row."""
    model.eval()
    loss_sum = 0.0
    predictions = np.empty(len(split), dtype=np.int64)
    for rows in task.eval_batches(split, batch_size):
        batch = {key: value.to(device) for key, value in task.collate(split, rows).items()}
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            logits = _logits(model, batch).float()
        loss_sum += nn.functional.cross_entropy(logits, batch["labels"], reduction="sum").item()
        predictions[rows] = logits.argmax(dim=-1).cpu().numpy()
    return loss_sum / max(len(split), 1), predictions
