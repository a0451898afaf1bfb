"""Everything checked and computed once per sweep, before any trial starts or anything is written.

Resolves the model and the data, checks them against the sweep file, tokenises the texts (or
preprocesses the images) once, and computes the majority-class baseline; for a training
function of your own, checks that it can be loaded. Every problem is a :class:`ConfigError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orchestrator.bundled import BundledNotFoundError, bundled_dataset, bundled_model_path, is_bundled
from orchestrator.config import SweepConfig
from orchestrator.errors import ConfigError
from trials.augment import noisy_copies
from trials.data import DataError, encode, labelled_texts, read_table, split
from trials.finetune import TrialData
from trials.images import images_in_folder, images_in_table, preprocess
from trials.metrics import majority_baseline
from trials.model import layer_count
from trials.user_function import FunctionRef, UserFunctionError


@dataclass(frozen=True)
class PreparedSweep:
    config: SweepConfig
    model_path: str | None  # None with trial.function, which loads its own model and data
    label_names: list[str]
    pad_token_id: int
    data: TrialData | None
    baseline: dict[str, float]
    function: FunctionRef | None = None


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
        _check_model_folder(reference, path)
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


# Weight files that from_pretrained finds in a folder by itself (the sharded ones through their index).
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_OTHER_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".ckpt", ".pt", ".pth", ".gguf")


def _check_model_folder(reference: str, path: Path) -> None:
    """The folder is what every trial's ``from_pretrained`` will load: a config.json that is a JSON
    object of a model type this transformers knows, and weights it finds beside it. Without this
    check each trial fails on its own, blaming the file or the hub (weights it then looks for online)."""
    import transformers
    from transformers import CONFIG_MAPPING, AutoConfig

    config_file = path / "config.json"
    try:
        settings = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError("model", reference, f"{config_file} is not valid JSON ({error}); save the model again with save_pretrained") from None
    if not isinstance(settings, dict):
        raise ConfigError("model", reference, f"{config_file} holds no JSON object of settings; save the model again with save_pretrained")
    model_type = settings.get("model_type")
    if model_type is not None and model_type not in CONFIG_MAPPING:
        raise ConfigError("model", reference, f"its config.json names model_type {model_type!r}, which transformers {transformers.__version__} "
                                              "does not know; upgrade transformers, or give a model of a type it supports")
    try:
        AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as error:
        raise ConfigError("model", reference, f"transformers cannot read its config.json ({_first_line(error)}); save the model again with save_pretrained") from None
    explicit = settings.get("transformers_weights")  # a config may name its weight file
    if any((path / name).is_file() for name in ([explicit] if isinstance(explicit, str) else _WEIGHT_FILES)):
        return
    others = sorted(item.name for item in path.iterdir() if item.suffix in _OTHER_WEIGHT_SUFFIXES and item.name not in _WEIGHT_FILES)
    found = f"; from_pretrained does not load {', '.join(others)}" if others else ""
    raise ConfigError("model", reference, f"the folder has config.json but no weights (model.safetensors or pytorch_model.bin){found}; save the model with save_pretrained")


def _first_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def _check_unfreeze_depth(config: SweepConfig, model_path: str) -> None:
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(model_path)
    layers = layer_count(model_config)
    bounds = config.search_space.bounds("unfreeze_depth")
    if bounds is None or layers is None:
        return
    low, high = bounds
    what = "encoder layers" if getattr(model_config, "num_hidden_layers", None) else "stages"
    if low is not None and low < 0 or high is not None and high > layers:
        raise ConfigError(
            "search_space.unfreeze_depth",
            {"low": low, "high": high},
            f"the model has {layers} {what}; keep unfreeze_depth between 0 and {layers}",
        )


def _read_table(field_value: str, path: Path):
    try:
        return read_table(path)
    except Exception as error:  # pandas raises many types for unreadable files
        raise ConfigError("data.source", field_value, f"cannot be read as a table ({type(error).__name__}: {error})") from None


def _read_texts(config: SweepConfig):
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
    frame = _read_table(data.source, path)
    try:
        return labelled_texts(frame, text_column, label_column)
    except DataError as error:
        value = {"data.text_column": text_column, "data.label_column": label_column}.get(error.field, data.source)
        raise ConfigError(error.field, value, str(error)) from None


def _read_images(config: SweepConfig):
    data = config.data
    source = Path(data.source).expanduser()
    image_column, label_column = data.image_column or "image", data.label_column or "label"
    try:
        if source.is_dir():
            return images_in_folder(source)
        if source.is_file():
            return images_in_table(_read_table(data.source, source), image_column, label_column, source.parent)
    except DataError as error:
        value = {"data.image_column": image_column, "data.label_column": label_column}.get(error.field, data.source)
        raise ConfigError(error.field, value, str(error)) from None
    raise ConfigError("data.source", data.source, "no such folder or file; give a folder with one subfolder of images per class, or a CSV of image paths and labels")


def _split(config: SweepConfig, labelled):
    available = len(labelled.labels)
    val_size = config.data.val_size or max(2, available // 5)
    train_size = config.data.train_size or available - val_size
    try:
        train, val = split(labelled, train_size, val_size, config.trial.seed)
    except DataError as error:
        raise ConfigError(error.field, train_size, f"{error}; lower train_size or val_size") from None
    if len(set(train.labels.tolist())) < 2:
        raise ConfigError("data.train_size", train_size, "the training split has a single class; use more rows")
    return train, val


def _text_data(config: SweepConfig, model_path: str) -> tuple[TrialData, list[str], int]:
    """Texts tokenised once: (data, label names, pad token id)."""
    from transformers import AutoTokenizer

    texts = _read_texts(config)
    train, val = _split(config, texts)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    max_length = config.data.max_length
    data = TrialData(
        train=encode(tokenizer, train.texts, train.labels, max_length),
        val=encode(tokenizer, val.texts, val.labels, max_length),
        val_noisy=encode(tokenizer, noisy_copies(val.texts, config.data.noisy_val_rate, config.trial.seed), val.labels, max_length)
        if config.data.noisy_val_rate > 0 else None,
    )
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return data, texts.label_names, pad_token_id


def _image_data(config: SweepConfig, model_path: str) -> tuple[TrialData, list[str], int]:
    """Images resized and cropped once by the model's image processor: (data, label names, 0)."""
    from transformers import AutoConfig, AutoImageProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

    model_config = AutoConfig.from_pretrained(model_path)
    if type(model_config) not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
        raise ConfigError("model", config.model, f"a {model_config.model_type} model cannot classify images; give a vision model (ViT, ResNet, ConvNeXt, ...)")
    try:
        processor = AutoImageProcessor.from_pretrained(model_path)
    except (OSError, ValueError):
        raise ConfigError("model", config.model, "no image processor beside the model (preprocessor_config.json); save the model's AutoImageProcessor with it") from None
    images = _read_images(config)
    train, val = _split(config, images)
    channels = getattr(model_config, "num_channels", 3)
    try:
        data = TrialData(train=preprocess(processor, train, channels), val=preprocess(processor, val, channels))
    except DataError as error:
        raise ConfigError(error.field, config.data.source, str(error)) from None
    return data, images.label_names, 0


TASK_DATA = {"text-classification": _text_data, "image-classification": _image_data}


def _user_function(config: SweepConfig) -> FunctionRef:
    """The sweep's own training function, imported once here so that a mistake stops the sweep before it starts."""
    here = Path.cwd()
    function = FunctionRef.parse(config.trial.function, here, search_path=(str(here),))
    try:
        function.load()
    except UserFunctionError as error:
        raise ConfigError("trial.function", config.trial.function, str(error)) from None
    return function


def prepare(config: SweepConfig) -> PreparedSweep:
    """Validate the model and data against ``config`` and tokenise or preprocess the data once."""
    if config.user_function:
        return PreparedSweep(config, None, [], 0, None, {}, function=_user_function(config))
    model_path = resolve_model(config.model)
    _check_unfreeze_depth(config, model_path)
    data, label_names, pad_token_id = TASK_DATA[config.task](config, model_path)
    baseline = majority_baseline(data.train.labels, data.val.labels, len(label_names))
    return PreparedSweep(config, model_path, label_names, pad_token_id, data, baseline)
