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

STATE_FILE = "trial_state.pt"


@dataclass
class TrainingState:
    epoch: int  # the last epoch finished
    best: float  # early stopping: best objective so far
    stale_epochs: int
    micro_batch_size: int  # rows per forward pass (smaller than the batch after an out-of-memory retry)


def save(folder: Path, model: nn.Module, optimizer, scheduler, rng: np.random.Generator, state: TrainingState) -> None:
    torch.save(
        {
            "trainable": {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "state": vars(state),
        },
        Path(folder) / STATE_FILE,
    )


def load(folder: Path) -> dict | None:
    """The saved state in ``folder`` (read into memory), or None when it holds none."""
    path = Path(folder) / STATE_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def restore(saved: dict, model: nn.Module, optimizer, scheduler, rng: np.random.Generator) -> TrainingState:
    """Put ``saved`` back into freshly built training objects; return the counters."""
    missing = set(saved["trainable"]) - {name for name, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"checkpoint does not fit this model: no parameters named {sorted(missing)[:3]}")
    model.load_state_dict(saved["trainable"], strict=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng.bit_generator.state = saved["rng"]
    torch.set_rng_state(saved["torch_rng"])
    return TrainingState(**saved["state"])
