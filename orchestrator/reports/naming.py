"""Short, readable names for parameters and trials (progress lines, tables, MLflow run names)."""

from __future__ import annotations

SHORT_NAMES = {
    "learning_rate": "lr", "batch_size": "bs", "unfreeze_depth": "unfreeze", "weight_decay": "wd",
    "label_smoothing": "ls", "warmup_ratio": "warmup", "layer_lr_decay": "lrdecay", "unfreeze_every": "gradual",
    "class_balance": "balance", "augment_prob": "augment", "image_augment": "imgaug",
    "lora_rank": "rank", "lora_alpha": "alpha", "lora_alpha_ratio": "alpha/rank", "lora_dropout": "lora_dropout", "lora_targets": "targets",
}


def short_params(params: dict, limit: int | None = None) -> str:
    """``lr=3e-05 bs=32 unfreeze=4``: the first ``limit`` parameters (all by default)."""
    parts = []
    for name, value in list(params.items())[:limit]:
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{SHORT_NAMES.get(name, name)}={shown}")
    return " ".join(parts)


def run_name(number: int, params: dict) -> str:
    """The MLflow run name of a trial: ``t007 lr=3e-05 bs=32 unfreeze=4``."""
    return f"t{number:03d} {short_params(params, limit=4)}".rstrip()


def confirmation_run_name(number: int, confirms: int, seed: int | None) -> str:
    """The MLflow run name of a confirmation run: ``c003 confirms t007 seed 2``."""
    return f"c{number:03d} confirms t{confirms:03d} seed {seed}"
