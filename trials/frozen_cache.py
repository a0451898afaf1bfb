"""The frozen-layer cache: the hidden states of every training and validation input at a layer
boundary, computed once per sweep by the first trial that starts from that boundary.

A trial that freezes its bottom ``b`` layers for its whole run starts from the cached states at
boundary ``b`` and runs only the layers above it, the head and the evaluation. Frozen layers then
act as a fixed feature extractor: they run once, in inference mode (no dropout).

Each boundary is built when the first trial that needs it starts, by that trial (its own model,
which holds the pre-trained bottom layers), into the cache's folder, under a file lock in that
folder: trials that need the same boundary at once build it once, and the rest read it from the
folder (memory-mapped: the trials of a node share one copy in the page cache). Boundaries no trial
asks for are never built.

Memory: every input's tokens (images: patches) × the model's width × 4 bytes (float32, the dtype
the trials run in) per boundary built; :func:`cache_bytes` computes it before anything runs.
The states are stored flat, as :class:`trials.data.EncodedSplit` stores token ids.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from trials.data import ragged_take
from trials.model import hidden_states_at

if TYPE_CHECKING:
    from trials.tasks import Batching

logger = logging.getLogger(__name__)  # "building boundary b" and "built boundary b": the two announce points
SPLITS = ("train", "val", "val_noisy")


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
class BoundaryStates:
    """The trials' splits at one boundary."""

    train: HiddenStates
    val: HiddenStates
    val_noisy: HiddenStates | None = None


@dataclass(frozen=True)
class FrozenCache:
    """Which boundaries a sweep's trials may start from and the folder their states are built
    into, or ``off``: why the sweep has none (trials then say so in their ``frozen_cache`` report)."""

    boundaries: tuple[int, ...] = ()
    layers: int = 0  # the model's layer count
    folder: str | None = None
    off: str | None = None

    def built(self) -> list[int]:
        """The boundaries whose states are in the folder now."""
        return [b for b in self.boundaries if self.folder is not None and _boundary_folder(self.folder, b).is_dir()]

    @property
    def nbytes(self) -> int:
        """Bytes of the boundaries built so far."""
        return sum(path.stat().st_size for b in self.built() for path in _boundary_folder(str(self.folder), b).glob("*.states.npy"))

    def summary(self) -> str:
        """One line: what the cache may hold, or why there is none."""
        if self.off is not None:
            return f"off: {self.off}"
        return f"boundaries {','.join(map(str, self.boundaries))} of {self.layers} layers; each built when the first trial that needs it starts, in {self.folder}"

    def states(self, boundary: int, model: nn.Module, task, splits: dict[str, object], *, device, batch_size: int = 64) -> BoundaryStates:
        """The states of ``splits`` at ``boundary``: read from the folder, or built there first with ``model``
        (its bottom ``boundary`` layers, pre-trained; already on ``device``) if no trial has built them yet."""
        if self.folder is None or boundary not in self.boundaries:
            raise ValueError(f"boundary {boundary} is not one of the cache's ({', '.join(map(str, self.boundaries)) or 'none'})")
        target = _boundary_folder(self.folder, boundary)
        if not target.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            with _locked(_lock_of(target)):
                if not target.is_dir():  # another trial may have built it while this one waited
                    _build_into(target, model, task, splits, [boundary], device=device, batch_size=batch_size)
        return _load(target)


def cache_bytes(splits: list, boundaries: list[int], width: int, tokens_per_image: int | None = None, itemsize: int = 4) -> int:
    """Bytes the cache takes with every boundary built: inputs' tokens (texts: their lengths;
    images: ``tokens_per_image`` each) × ``width`` × boundaries × ``itemsize``."""
    tokens = sum(len(split) * tokens_per_image if tokens_per_image else int(split.offsets[-1]) for split in splits)
    return tokens * width * len(boundaries) * itemsize


def build(model: nn.Module, task, splits: dict[str, object], boundaries: list[int], device, *, folder: str | Path, batch_size: int = 64) -> FrozenCache:
    """Build every one of ``boundaries`` into ``folder`` at once (one pass over the data) and return the cache."""
    from trials.model import encoder_layers

    pending = [b for b in boundaries if not _boundary_folder(str(folder), b).is_dir()]
    if pending:
        model.to(device)  # outside inference mode: its parameters stay trainable
        Path(folder).mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as locks:
            for boundary in sorted(pending):  # one order for every builder: no deadlock
                locks.enter_context(_locked(_lock_of(_boundary_folder(str(folder), boundary))))
            pending = [b for b in pending if not _boundary_folder(str(folder), b).is_dir()]
            if pending:
                _build_into(None, model, task, splits, pending, device=device, batch_size=batch_size, folder=Path(folder))
    return FrozenCache(tuple(sorted(boundaries)), len(encoder_layers(model)), str(folder))


def _boundary_folder(folder: str, boundary: int) -> Path:
    return Path(folder) / f"boundary-{boundary}"


def _lock_of(target: Path) -> Path:
    return target.with_name(f"{target.name}.lock")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between processes (and nodes sharing the folder); released when the holder dies."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@torch.inference_mode()
def _build_into(target: Path | None, model, task, splits, boundaries, *, device, batch_size, folder: Path | None = None) -> None:
    """Compute ``splits`` at ``boundaries`` and write each boundary's folder whole (a rename: readers
    never see a half-written one)."""
    base = folder if target is None else target.parent
    for boundary in boundaries:
        logger.info("frozen-layer cache: building boundary %d", boundary)
    started = time.perf_counter()
    built = {name: _states_of(model, task, split, boundaries, device=device, batch_size=batch_size) for name, split in splits.items() if split is not None}
    if "train" not in built or "val" not in built:
        raise ValueError("the frozen-layer cache needs the train and validation splits")
    for boundary in boundaries:
        final = _boundary_folder(str(base), boundary)
        for stale in final.parent.glob(f"{final.name}.partial-*"):  # a builder that died: this one holds the lock now
            shutil.rmtree(stale, ignore_errors=True)
        partial = final.with_name(f"{final.name}.partial-{os.getpid()}")
        partial.mkdir(parents=True)
        nbytes = 0
        for name, by_boundary in built.items():
            states = by_boundary[boundary]
            for part in ("states", "offsets", "labels"):
                np.save(partial / f"{name}.{part}.npy", getattr(states, part))
            nbytes += states.states.nbytes
        os.rename(partial, final)
        logger.info("frozen-layer cache: built boundary %d (%.0f MB) in %.1f s", boundary, nbytes / 1e6, time.perf_counter() - started)


def _load(target: Path) -> BoundaryStates:
    def split(name: str) -> HiddenStates | None:
        if not (target / f"{name}.states.npy").is_file():
            return None
        return HiddenStates(np.load(target / f"{name}.states.npy", mmap_mode="r"), np.load(target / f"{name}.offsets.npy"),
                            np.load(target / f"{name}.labels.npy"))

    train, val = split("train"), split("val")
    if train is None or val is None:
        raise ValueError(f"{target} holds no train and validation states")
    return BoundaryStates(train, val, split("val_noisy"))


def _states_of(model, task, split, boundaries, *, device, batch_size) -> dict[int, HiddenStates]:
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
