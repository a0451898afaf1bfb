"""Everything checked and computed once per sweep, before any trial starts or anything is written.

Resolves the model and the data, checks them against the sweep file, tokenises the data
once, and computes the majority-class baseline. Every problem is a :class:`ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.bundled import BundledNotFoundError, bundled_dataset, bundled_model_path, is_bundled
from orchestrator.config import SweepConfig
from orchestrator.errors import ConfigError
from trials.augment import noisy_copies
from trials.data import DataError, encode, labelled_texts, read_table, split
from trials.finetune import TrialData
from trials.metrics import majority_baseline


@dataclass(frozen=True)
class PreparedSweep:
    config: SweepConfig
    model_path: str
    label_names: list[str]
    pad_token_id: int
    data: TrialData
    baseline: dict[str, float]


def resolve_model(reference: str) -> str:
    """A loadable model location: a bundled model's folder, a local folder, or a cached hub id."""
    from transformers import AutoConfig

    if is_bundled(reference):
        try:
            path = bundled_model_path(reference)
        except BundledNotFoundError as error:
            raise ConfigError("model", reference, str(error)) from None
        return str(path)
    if Path(reference).expanduser().exists():
        path = Path(reference).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError("model", reference, "the folder has no config.json; point at a saved transformers model folder")
        return str(path)
    try:
        AutoConfig.from_pretrained(reference)
    except (OSError, ValueError):
        raise ConfigError(
            "model",
            reference,
            "not a local folder and not loadable from the Hugging Face hub or its cache; "
            "give a local model folder, or download it first with `hf download ID`",
        ) from None
    return reference


def _model_layers(model_path: str) -> int | None:
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(model_path), "num_hidden_layers", None)


def _check_unfreeze_depth(config: SweepConfig, layers: int | None) -> None:
    bounds = config.search_space.bounds("unfreeze_depth")
    if bounds is None or layers is None:
        return
    low, high = bounds
    if low is not None and low < 0 or high is not None and high > layers:
        raise ConfigError(
            "search_space.unfreeze_depth",
            {"low": low, "high": high},
            f"the model has {layers} encoder layers; keep unfreeze_depth between 0 and {layers}",
        )


def _read_data(config: SweepConfig):
    data = config.data
    text_column, label_column = data.text_column or "text", data.label_column or "label"
    if is_bundled(data.source):
        try:
            path, dataset = bundled_dataset(data.source)
        except BundledNotFoundError as error:
            raise ConfigError("data.source", data.source, str(error)) from None
        text_column, label_column = data.text_column or dataset.text_column, data.label_column or dataset.label_column
    else:
        path = Path(data.source).expanduser()
        if not path.is_file():
            raise ConfigError("data.source", data.source, "no such file; give a CSV, TSV, JSONL or Parquet file, or bundled:tweets-sentiment")
    try:
        frame = read_table(path)
    except Exception as error:  # pandas raises many types for unreadable files
        raise ConfigError("data.source", data.source, f"cannot be read as a table ({type(error).__name__}: {error})") from None
    try:
        return labelled_texts(frame, text_column, label_column)
    except DataError as error:
        value = {"data.text_column": text_column, "data.label_column": label_column}.get(error.field, data.source)
        raise ConfigError(error.field, value, str(error)) from None


def prepare(config: SweepConfig) -> PreparedSweep:
    """Validate the model and data against ``config`` and tokenise the data once."""
    from transformers import AutoTokenizer

    model_path = resolve_model(config.model)
    _check_unfreeze_depth(config, _model_layers(model_path))
    texts = _read_data(config)
    available = len(texts.labels)
    val_size = config.data.val_size or max(2, available // 5)
    train_size = config.data.train_size or available - val_size
    try:
        train, val = split(texts, train_size, val_size, config.trial.seed)
    except DataError as error:
        raise ConfigError(error.field, train_size, f"{error}; lower train_size or val_size") from None
    if len(set(train.labels.tolist())) < 2:
        raise ConfigError("data.train_size", train_size, "the training split has a single class; use more rows")

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    max_length = config.data.max_length
    data = TrialData(
        train=encode(tokenizer, train.texts, train.labels, max_length),
        val=encode(tokenizer, val.texts, val.labels, max_length),
        val_noisy=encode(tokenizer, noisy_copies(val.texts, config.data.noisy_val_rate, config.trial.seed), val.labels, max_length)
        if config.data.noisy_val_rate > 0 else None,
    )
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    baseline = majority_baseline(train.labels, val.labels, len(texts.label_names))
    return PreparedSweep(config, model_path, texts.label_names, pad_token_id, data, baseline)
