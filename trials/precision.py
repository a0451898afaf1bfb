"""``trial.precision``: the number format of a trial's forward passes.

``bf16`` and ``fp16`` autocast the forward passes on a CUDA GPU (``fp16`` with a gradient scaler,
whose loss scale starts afresh when a trial resumes); the weights and the optimizer stay in fp32.
``auto`` is ``bf16`` on GPUs that support it and fp32 everywhere else, the CPU included.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported where a trial runs: the sweep's config reads PRECISIONS without it
    import torch

_TORCH_DTYPES: dict[str, str | None] = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
PRECISIONS = ("auto", *_TORCH_DTYPES)
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]  # PRECISIONS, for the sweep file's type


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype | None  # None: fp32, no autocast
    device_type: str
    scaler: torch.amp.GradScaler  # enabled for fp16 only: otherwise each call passes through

    def autocast(self):
        import torch

        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true size (before clipping them)."""
        self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.step(optimizer)
        self.scaler.update()


def precision_for(name: str, device: torch.device) -> Precision:
    """What ``trial.precision: name`` means on ``device``; ValueError where it cannot run."""
    import torch

    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; valid names are {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        if name not in ("auto", "fp32"):
            raise ValueError(f"trial.precision {name} autocasts on CUDA GPUs, and this trial runs on {device.type}; use auto or fp32")
        name = "fp32"
    elif name in ("auto", "bf16"):
        supported = torch.cuda.is_bf16_supported()
        if name == "bf16" and not supported:
            raise ValueError(f"trial.precision bf16: {torch.cuda.get_device_name(device)} does not support bf16; use fp16 or auto")
        name = "bf16" if supported else "fp32"
    dtype = _TORCH_DTYPES[name]
    return Precision(getattr(torch, dtype) if dtype else None, device.type, torch.amp.GradScaler(device.type, enabled=name == "fp16"))


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them: less
    memory, about a third more compute. Non-reentrant, so frozen embeddings need no workaround."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing; set trial.gradient_checkpointing: false")
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers 5; gradient_checkpointing_enable before
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]  # torch types a Module's unknown attributes as Tensor | Module; checked above
