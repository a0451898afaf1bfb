"""The frozen-layer cache: the hidden states of every training and validation input at the layer
boundaries a sweep's ``unfreeze_depth`` range can ask for, computed once per sweep.

A trial that freezes its bottom ``b`` layers for its whole run starts from the cached states at
boundary ``b`` and runs only the layers above it, the head and the evaluation. Frozen layers then
act as a fixed feature extractor: they run once, in inference mode (no dropout).

Memory: every input's tokens (images: patches) × the model's width × the boundaries × 4 bytes
(float32, the dtype the trials run in); :func:`cache_bytes` computes it before anything runs.
The states are stored flat, as :class:`trials.data.EncodedSplit` stores token ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from trials.data import ragged_take
from trials.model import encoder_layers, hidden_states_at

if TYPE_CHECKING:
    from trials.tasks import Batching


@dataclass(frozen=True)
class HiddenStates:
    """One split's hidden states at one boundary: input ``i`` is ``states[offsets[i]:offsets[i + 1]]``."""

    states: np.ndarray  # (tokens, width)
    offsets: np.ndarray  # int64, len = n + 1
    labels: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> HiddenStates:
        return HiddenStates(*ragged_take(self.states, self.offsets, rows), self.labels[rows])


@dataclass(frozen=True)
class FrozenCache:
    """The cached states of the trials' splits by boundary (``train[b]``, ``val[b]``, ...), or
    ``off``: why the sweep has none (trials then say so in their ``frozen_cache`` report)."""

    train: dict[int, HiddenStates] = field(default_factory=dict)
    val: dict[int, HiddenStates] = field(default_factory=dict)
    val_noisy: dict[int, HiddenStates] | None = None
    layers: int = 0  # the model's layer count
    build_seconds: float = 0.0
    off: str | None = None

    @property
    def boundaries(self) -> list[int]:
        return sorted(self.train)

    @property
    def nbytes(self) -> int:
        splits = [self.train, self.val, self.val_noisy or {}]
        return sum(states.states.nbytes for split in splits for states in split.values())

    def summary(self) -> str:
        """One line: what the cache holds, or why there is none."""
        if self.off is not None:
            return f"off: {self.off}"
        return (f"boundaries {','.join(map(str, self.boundaries))} of {self.layers} layers; "
                f"{self.nbytes / 1e6:.0f} MB; built in {self.build_seconds:.1f} s")


def cache_bytes(splits: list, boundaries: list[int], width: int, tokens_per_image: int | None = None, itemsize: int = 4) -> int:
    """Bytes the cache takes: inputs' tokens (texts: their lengths; images: ``tokens_per_image``
    each) × ``width`` × boundaries × ``itemsize``."""
    tokens = sum(len(split) * tokens_per_image if tokens_per_image else int(split.offsets[-1]) for split in splits)
    return tokens * width * len(boundaries) * itemsize


def build(model: nn.Module, task, splits: dict[str, object], boundaries: list[int], device, batch_size: int = 64) -> FrozenCache:
    """Run ``model``'s bottom layers over each split once (inference mode) and keep the states at
    ``boundaries``. ``task`` batches the rows (:meth:`trials.tasks.Task.collate`)."""
    started = time.perf_counter()
    model.to(device)
    built = {name: _states_of(model, task, split, boundaries, device, batch_size) if split is not None else None for name, split in splits.items()}
    train, val = built["train"], built["val"]
    if train is None or val is None:
        raise ValueError("the frozen-layer cache needs the train and validation splits")
    return FrozenCache(train, val, built.get("val_noisy"), layers=len(encoder_layers(model)),
                       build_seconds=time.perf_counter() - started)


def _states_of(model, task, split, boundaries, device, batch_size) -> dict[int, HiddenStates]:
    arrays: dict[int, np.ndarray] = {}
    offsets = None
    for rows in task.eval_batches(split, batch_size):
        batch = {key: value.to(device) for key, value in task.collate(split, rows).items() if key != "labels"}
        states = hidden_states_at(model, batch, boundaries)
        mask = batch.get("attention_mask")
        if offsets is None:
            tokens = split.lengths if mask is not None else np.full(len(split), states[boundaries[0]].shape[1])
            offsets = np.zeros(len(split) + 1, dtype=np.int64)
            np.cumsum(tokens, out=offsets[1:])
            width = states[boundaries[0]].shape[-1]
            arrays = {b: np.empty((int(offsets[-1]), width), dtype=np.float32) for b in boundaries}
        lengths = offsets[rows + 1] - offsets[rows]
        for boundary, tensor in states.items():
            values = tensor.float().cpu().numpy()
            for position, (row, length) in enumerate(zip(rows, lengths, strict=True)):
                arrays[boundary][offsets[row] : offsets[row] + length] = values[position, :length]
    if offsets is None:
        raise ValueError("the split has no rows to cache")
    return {b: HiddenStates(arrays[b], offsets, split.labels) for b in boundaries}


def collate(split: HiddenStates, rows: np.ndarray, input_name: str) -> dict[str, torch.Tensor]:
    """The cached states at ``rows``, padded with zeros to the longest, with their attention mask
    (the mask only for texts: ``input_name`` ``inputs_embeds``)."""
    lengths = split.lengths[rows]
    longest = int(lengths.max())
    padded = np.zeros((len(rows), longest, split.states.shape[1]), dtype=split.states.dtype)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for position, (row, length) in enumerate(zip(rows, lengths, strict=True)):
        padded[position, :length] = split.states[split.offsets[row] : split.offsets[row] + length]
        mask[position, :length] = 1
    batch = {input_name: torch.from_numpy(padded), "labels": torch.from_numpy(split.labels[rows])}
    if input_name == "inputs_embeds":
        batch["attention_mask"] = torch.from_numpy(mask)
    return batch


@dataclass(frozen=True)
class CachedInputs:
    """A task whose inputs are cached hidden states: its batches are the task's (same rows, same
    order for the same random state), its inputs the states, without augmentation."""

    task: Batching
    input_name: str

    def train_batches(self, split, batch_size, rng, rows=None) -> Iterator[np.ndarray]:
        return self.task.train_batches(split, batch_size, rng, rows=rows)

    def eval_batches(self, split, batch_size) -> Iterator[np.ndarray]:
        return self.task.eval_batches(split, batch_size)

    def augmentation(self, hyperparameters, rng) -> Callable | None:
        return None

    def collate(self, split, rows, transform=None) -> dict[str, torch.Tensor]:
        return collate(split, rows, self.input_name)


def plan(cache: FrozenCache | None, hyperparameters, depth: int, layers: int, max_epochs: int) -> tuple[int | None, str]:
    """(the boundary a trial starts from, or None to run the whole model; the one line its
    ``frozen_cache`` report says). The boundary is the deepest cached one below every layer that
    trains at some point of the trial (gradual unfreezing included)."""
    if cache is None:
        return None, "off: no cache was built for this sweep"
    if cache.off is not None:
        return None, f"off: {cache.off}"
    if hyperparameters.augment_prob > 0:
        return None, f"off: augment_prob={hyperparameters.augment_prob:g} changes the training inputs every epoch"
    trained = depth
    if hyperparameters.unfreeze_every > 0:
        groups = 1 + depth + (depth == layers)  # head, each trained layer, the embeddings at full depth
        active = min(groups, 1 + -(-max_epochs // hyperparameters.unfreeze_every))
        trained = min(depth, active - 1)
    frozen = layers - trained
    if frozen <= 0:
        return None, "off: unfreeze_depth trains every layer" + (" by the last epoch (gradual unfreezing)" if hyperparameters.unfreeze_every > 0 else "")
    usable = [b for b in cache.boundaries if b <= frozen]
    if not usable:
        return None, f"off: no cached boundary at or below layer {frozen} (cached: {', '.join(map(str, cache.boundaries))})"
    boundary = max(usable)
    return boundary, f"on: the bottom {boundary} of {layers} layers from the cache"
