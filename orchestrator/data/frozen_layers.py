"""The sweep's frozen-layer cache (:mod:`trials.frozen_cache`), planned on the driver before the
trials start: which boundaries the search space can ask for, whether the model can be split
there, whether the cache fits (checked before any compute), a check on a few validation rows that
running from each boundary reproduces the whole model, and the folder the boundaries are built
into. Each boundary is built by the first trial that starts from it (:meth:`FrozenCache.states`).

The folder is ``<results_dir>/frozen-cache/<key>``, the key a digest of the model and the trials'
data, so a continued study (or another sweep of the same model and data) reads what an earlier one
built; with a ``results_dir`` on object storage (``s3://``), each node's temporary folder. On a
multi-node cluster whose ``results_dir`` is a shared file system one node builds a boundary for
all; otherwise each node builds those its own trials need."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from orchestrator.data.trial_settings import trial_settings
from orchestrator.progress.phases import phase
from orchestrator.progress.quiet_transformers import quiet_transformers
from orchestrator.search.search_space import CategoricalParam, IntParam
from trials import frozen_cache
from trials.entrypoint import release_accelerator_memory
from trials.frozen_cache import FrozenCache
from trials.hyperparameters import Hyperparameters
from trials.model import (
    FromBoundary,
    UnsplittableModelError,
    check_splittable,
    encoder_layers,
    hidden_states_at,
    layer_count,
    pick_device,
)
from trials.task_specs import TEXT_GENERATION
from trials.tasks import task_for

if TYPE_CHECKING:
    from orchestrator.data.prepare import PreparedSweep

_CHECK_ROWS = 8  # validation rows run both ways to check a split model
_TOLERANCE = 1e-3  # of the largest logit: float32 sums in a different order differ by far less


def with_frozen_cache(prepared: PreparedSweep) -> tuple[PreparedSweep, str | None]:
    """``prepared`` with its trials' data carrying the frozen-layer cache (or why there is none),
    and a one-line note for the user when the cache was wanted but could not be used."""
    config = prepared.config
    if config.user_function:
        return prepared, None
    with quiet_transformers(), phase("building the frozen-layer cache") as step:
        cache, note = _cache_for(prepared)
        step.detail = cache.summary()
    release_accelerator_memory()  # the driver's copy of the model: trials share its GPU
    return replace(prepared, data=replace(prepared.task_data, frozen=cache)), note


def _cache_for(prepared) -> tuple[FrozenCache, str | None]:
    config = prepared.config
    if config.trial.cache_frozen == "off":
        return FrozenCache(off="trial.cache_frozen is off"), None
    if config.task == TEXT_GENERATION:  # trials.model.layers_from runs encoders only
        return FrozenCache(off="causal language models run every layer"), None
    from transformers import AutoConfig

    boundaries = frozen_boundaries(config.search_space, layer_count(AutoConfig.from_pretrained(prepared.model_path)) or 0)
    if not boundaries:
        return FrozenCache(off="the search space's unfreeze_depth never freezes a layer"), None
    settings = trial_settings(prepared, keep_best_model=False)
    task = task_for(settings)
    model = task.load_model(Hyperparameters())
    try:
        check_splittable(model)
    except UnsplittableModelError as error:
        return _fallback(str(error))
    data = prepared.data
    splits = {"train": data.train, "val": data.val, "val_noisy": data.val_noisy}
    device = pick_device(settings.use_gpu)
    width, tokens_per_image = _token_shape(model, task, data.val, device)
    needed = frozen_cache.cache_bytes([s for s in splits.values() if s is not None], boundaries, width, tokens_per_image)
    limit = cache_limit_bytes(config.trial.cache_frozen_max_gb)
    if needed > limit:
        tokens = needed // (width * len(boundaries) * 4)
        return _fallback(f"it would take {needed / 1e9:.2f} GB ({tokens:,} tokens x width {width} x {len(boundaries)} boundaries x 4 bytes), "
                         f"over the limit of {limit / 1e9:.2f} GB; raise trial.cache_frozen_max_gb or narrow unfreeze_depth")
    try:
        mismatch = _reproduction_error(model, task, data.val, boundaries, device)
    except Exception as error:  # noqa: BLE001 - a model whose forward does more than embeddings and the stack
        mismatch = f"{type(model).__name__} cannot run from a layer boundary ({type(error).__name__}: {_first_line(error)})"
    if mismatch is not None:
        return _fallback(mismatch)
    return FrozenCache(tuple(boundaries), len(encoder_layers(model)), str(cache_folder(config, prepared.model_path, splits))), None


def cache_folder(config, model_path: str, splits: dict) -> Path:
    """Where the sweep's boundaries are built: keyed by the model and the data, so that a folder
    never holds states of other inputs."""
    digest = hashlib.blake2b(digest_size=10)
    digest.update(f"{config.task}\0{Path(model_path).resolve()}\0".encode())
    for path in sorted(Path(model_path).glob("*")) if Path(model_path).is_dir() else []:
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    for name, split in sorted(splits.items()):
        digest.update(name.encode())
        for array in _arrays(split):
            digest.update(np.ascontiguousarray(array).view(np.uint8).data)
    results_dir = str(config.storage.results_dir)
    base = Path(tempfile.gettempdir()) / "hpo-frozen-cache" if "://" in results_dir else Path(results_dir).expanduser().resolve() / "frozen-cache"
    return base / digest.hexdigest()


def _arrays(split) -> list[np.ndarray]:
    if split is None or not is_dataclass(split):
        return []
    return [value for value in (getattr(split, f.name) for f in fields(split)) if isinstance(value, np.ndarray)]


def _first_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")[:200]


def _fallback(reason: str) -> tuple[FrozenCache, str]:
    return FrozenCache(off=reason), f"frozen-layer cache off: {reason}; trials run every layer"


def frozen_boundaries(search_space, layers: int) -> list[int]:
    """The boundaries (frozen layers at the bottom) that the search space's ``unfreeze_depth``
    values can ask for: ``layers - depth`` for each depth below ``layers``, deepest last."""
    if "unfreeze_depth" in search_space.fixed:
        depths = [search_space.fixed["unfreeze_depth"]]
    else:
        param = search_space.params.get("unfreeze_depth")
        if isinstance(param, IntParam):
            depths = list(range(param.low, param.high + 1, param.step or 1))
        elif isinstance(param, CategoricalParam):
            depths = list(param.choices)
        else:
            depths = []
    return sorted({layers - depth for depth in depths if isinstance(depth, int) and 0 <= depth < layers})


def cache_limit_bytes(max_gb: float | None) -> int:
    """``trial.cache_frozen_max_gb``, or by default a quarter of this machine's memory."""
    if max_gb is not None:
        return int(max_gb * 1e9)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def _token_shape(model, task, split, device) -> tuple[int, int | None]:
    """(the model's width, tokens per image or None for texts): the embeddings of one input."""
    model.to(device)
    batch = {key: value.to(device) for key, value in task.collate(split, np.arange(1)).items() if key != "labels"}
    states = hidden_states_at(model, batch, [0])[0]
    return states.shape[-1], None if "attention_mask" in batch else states.shape[1]


@torch.inference_mode()
def _reproduction_error(model, task, split, boundaries: list[int], device) -> str | None:
    """None when running the model from each boundary gives its own outputs on a few validation
    rows; otherwise why not."""
    rows = np.arange(min(_CHECK_ROWS, len(split)))
    model.eval()
    inputs = {key: value.to(device) for key, value in task.collate(split, rows).items() if key != "labels"}
    expected = model(**inputs).logits
    states = hidden_states_at(model, inputs, boundaries)
    mask = {"attention_mask": inputs["attention_mask"]} if "attention_mask" in inputs else {}
    for boundary in boundaries:
        got = FromBoundary(model, boundary)(**{task.hidden_input: states[boundary], **mask}).logits
        difference = float((got - expected).abs().max())
        if difference > _TOLERANCE * max(1.0, float(expected.abs().max())):
            return (f"{type(model).__name__} run from its layer {boundary} does not reproduce its outputs "
                    f"(largest difference {difference:.2g}); its layers cannot start from cached hidden states")
    return None
