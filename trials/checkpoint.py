"""A trial's training state between epochs, so a restarted trial continues where it stopped.

Only parameters that train are saved (frozen layers are the pre-trained weights, reloaded
with the model), with the optimizer, the learning-rate schedule, the data order and the
early-stopping counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trials.trial_files import BEST_MODEL_FILE, STATE_FILE


@dataclass
class TrainingState:
    epoch: int  # the last epoch finished
    best: float  # early stopping: best objective so far
    stale_epochs: int
    micro_batch_size: int  # rows per forward pass (smaller than the batch after an out-of-memory retry)


def trained_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the parameters that train; the others are the pre-trained weights."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save(folder: Path, model: nn.Module, optimizer, scheduler, rng: np.random.Generator, *, state: TrainingState,
         best_model: dict[str, torch.Tensor] | None = None) -> None:
    if best_model is not None:
        save_best_model(folder, best_model)
    torch.save(
        {
            "trainable": trained_weights(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "state": vars(state),
        },
        Path(folder) / STATE_FILE,
    )


def save_best_model(folder: Path, best_model: dict[str, torch.Tensor]) -> None:
    torch.save(best_model, Path(folder) / BEST_MODEL_FILE)


def load(folder: Path) -> dict | None:
    """The saved state in ``folder`` (read into memory), or None when it holds none. Its
    ``best_model`` holds the best epoch's parameters when the trial kept them."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    saved["best_model"] = load_best_model(folder)
    return saved


def load_best_model(folder: Path) -> dict[str, torch.Tensor] | None:
    path = Path(folder) / BEST_MODEL_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def best_model_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of the best model a trial saved in ``folder``; FileNotFoundError when it saved none."""
    weights = load_best_model(folder)
    if weights is None:
        raise FileNotFoundError(f"no {BEST_MODEL_FILE} in {folder}: the trial saved no best model there")
    return weights


def apply_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load saved trained parameters into a model built from the same pre-trained weights."""
    missing = set(weights) - {name for name, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"checkpoint does not fit this model: no parameters named {sorted(missing)[:3]}")
    model.load_state_dict(weights, strict=False)


def restore(saved: dict, model: nn.Module, optimizer, scheduler, rng: np.random.Generator) -> TrainingState:
    """Put ``saved`` back into freshly built training objects; return the counters."""
    apply_weights(model, saved["trainable"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng.bit_generator.state = saved["rng"]
    torch.set_rng_state(saved["torch_rng"])
    return TrainingState(**saved["state"])
