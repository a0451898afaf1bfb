"""Everything checked and computed once per sweep, before any trial starts or anything is written.

Resolves the model and the data, checks them against the sweep file, tokenises the texts (or
preprocesses the images) once, and computes the majority-class baseline; for a training
function of your own, checks that it can be loaded. Every problem is a :class:`ConfigError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.data.splits import Splits, make_splits
from orchestrator.errors import MISSING, ConfigError
from orchestrator.sweep.bundled import BundledNotFoundError, bundled_dataset, bundled_model_path, is_bundled
from orchestrator.sweep.config import SweepConfig
from orchestrator.sweep.hyperparameter_checks import lora_targets_values
from trials.augment import noisy_copies
from trials.data import DataError, EncodedSplit, MissingColumn, encode, labelled_texts, read_table
from trials.finetune import TrialData
from trials.images import ImageSplit, images_in_folder, images_in_table, preprocess
from trials.metrics import majority_baseline
from trials.model import LayerStackNotFoundError, layer_count
from trials.task_specs import IMAGE_CLASSIFICATION, TASK_SPECS, TEXT_CLASSIFICATION, TEXT_GENERATION
from trials.text_generation import GenerationSplit
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
    test: EncodedSplit | ImageSplit | GenerationSplit | None = None  # stays on the driver: no trial ever gets it
    splits: Splits | None = None

    @property
    def task_data(self) -> TrialData:
        """``data``, which every built-in task prepares (only trial.function leaves it None)."""
        if self.data is None:
            raise RuntimeError("no prepared data: the trials run trial.function, which loads its own")
        return self.data

    @property
    def task_splits(self) -> Splits:
        """``splits``, which every built-in task makes (only trial.function leaves it None)."""
        if self.splits is None:
            raise RuntimeError("no splits: the trials run trial.function, which loads its own data")
        return self.splits


_RELATIVE = "relative paths start at the sweep file's folder"  # config.py made them absolute


def resolve_model(reference: str) -> str:
    """A loadable model location: a bundled model's folder, a local folder, or a cached hub id.

    The sweep file's validation made a local folder's path absolute (relative to the sweep file):
    any other value is a hub id, whatever the working directory holds.
    """
    from transformers import AutoConfig

    if is_bundled(reference):
        try:
            path = bundled_model_path(reference)
        except BundledNotFoundError as error:
            raise ConfigError("model", reference, str(error)) from None
        return str(path)
    path = Path(reference)
    if path.is_absolute():
        if not path.exists():
            raise ConfigError("model", reference, f"not a local folder ({_RELATIVE}); give the path of a saved transformers model folder, or a hub id")
        if not (path / "config.json").is_file():
            raise ConfigError("model", reference, "the folder has no config.json; point at a saved transformers model folder")
        _check_model_folder(reference, path)
        return str(path)
    if path.exists():  # transformers would load it here, and look on the hub in each trial's own folder
        raise ConfigError("model", reference, f"a hub id, but the working directory has a folder of that name ({_RELATIVE}); "
                          "write the folder's path relative to the sweep file (./NAME or ../NAME), or absolute")
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


def _skeleton(model_path: str):
    """The model's modules without weights (on the meta device), or None when transformers
    cannot build it (the task's own check says why)."""
    import torch
    from transformers import AutoConfig, AutoModel

    try:
        with torch.device("meta"):
            return AutoModel.from_config(AutoConfig.from_pretrained(model_path))
    except ValueError:
        return None


def _check_model_settings(config: SweepConfig, model_path: str) -> None:
    """Each ``lora_targets`` the search can give resolves to modules of this model, and the model
    can checkpoint its activations when ``trial.gradient_checkpointing`` asks."""
    targets = lora_targets_values(config.search_space)
    if not targets and not config.trial.gradient_checkpointing:
        return
    model = _skeleton(model_path)
    if model is None:
        return
    if config.trial.gradient_checkpointing and not model.supports_gradient_checkpointing:
        raise ConfigError("trial.gradient_checkpointing", True, f"a {model.config.model_type} model does not support it; set it to false")
    from trials.lora import LoraTargetsError, target_modules

    for value in targets:
        try:
            target_modules(model, value, None)
        except LoraTargetsError as error:
            raise ConfigError("search_space.lora_targets", value, str(error)) from None
        except LayerStackNotFoundError:
            raise ConfigError("search_space.method", "lora", f"a {model.config.model_type} model has no list of layers to put adapters on; use method: full") from None


_TABLE_FILES = "a CSV, TSV, JSONL or Parquet file"


def _read_table(field: str, source: str, path: Path):
    try:
        frame = read_table(path)
    except Exception as error:  # pandas raises many types for unreadable files
        import pandas as pd

        if isinstance(error, pd.errors.EmptyDataError):
            raise ConfigError(field, source, f"the file is empty; give {_TABLE_FILES} with a header row and data rows") from None
        problem = " ".join(str(error).split())
        raise ConfigError(field, source, f"cannot be read as a table ({type(error).__name__}: {problem}); fix the file where it says, "
                                         f"or give {_TABLE_FILES}") from None
    if len(frame.columns) == 0 or len(frame) == 0:
        held = "only a header" if len(frame.columns) else "no columns and no rows"
        raise ConfigError(field, source, f"the file holds {held}; give {_TABLE_FILES} with a header row and data rows")
    return frame


def _columns(config: SweepConfig, *names: str) -> dict[str, str]:
    """The data's column names: as set, else the bundled dataset's, else the defaults."""
    data = config.task_data
    defaults = {"text_column": "text", "image_column": "image", "label_column": "label"}
    if is_bundled(data.source):
        try:
            _, dataset = bundled_dataset(data.source)
        except BundledNotFoundError as error:
            raise ConfigError("data.source", data.source, str(error)) from None
        defaults.update(text_column=dataset.text_column, label_column=dataset.label_column)
    return {name: getattr(data, name) or defaults[name] for name in names}


def _read_frame(field: str, source: str):
    if field == "data.source" and is_bundled(source):
        path, _ = bundled_dataset(source)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            dataset_dict = " or a folder saved with DatasetDict.save_to_disk (it holds dataset_dict.json)" if field == "data.source" else ""
            raise ConfigError(field, source, f"a folder, not a table file; give {_TABLE_FILES}{dataset_dict}")
        if not path.is_file():
            raise ConfigError(field, source, f"no such file ({_RELATIVE}); give {_TABLE_FILES}" + (", or bundled:tweets-sentiment" if field == "data.source" else ""))
    return _read_table(field, source, path)


def _data_error(error: DataError, field: str, source: str, columns: Mapping[str, str | None]) -> ConfigError:
    """The rows read for ``field`` (from ``source``: a file, or a part of one) cannot be used: name the
    setting at fault, or the file when it is another than ``data.source``, and say which file it is."""
    setting = {f"data.{name}": column for name, column in columns.items()}.get(error.field)
    if isinstance(error, MissingColumn):
        if field != "data.source":  # a validation or test file lacks a column data.source has
            return ConfigError(field, source, f"it has no column {error.column!r} ({error.field}); its columns are {error.columns}: "
                                              "give it the same columns as data.source")
        return ConfigError(error.field, error.column, f"{error} (in {source}): set {error.field} to one of them")
    if error.field == "data.source":
        return ConfigError(field, source, str(error))
    return ConfigError(error.field, source, str(error)) if setting is None else ConfigError(error.field, setting, f"{error} (in {source})")


def _text_readers(config: SweepConfig) -> dict:
    columns = _columns(config, "text_column", "label_column")

    def from_frame(frame, field, source, min_classes):
        try:
            return labelled_texts(frame, columns["text_column"], columns["label_column"], min_classes)
        except DataError as error:
            raise _data_error(error, field, source, columns) from None

    return {
        "read_source": lambda field, source, min_classes: from_frame(_read_frame(field, source), field, source, min_classes),
        "read_frame": _read_frame,
        "from_frame": from_frame,
        "read_dataset_dict": _read_dataset_dict,
    }


def _read_dataset_dict(source: str) -> dict:
    """A ``datasets.DatasetDict`` saved with ``save_to_disk``: each split as a table, class ids as their names."""
    from orchestrator.data.splits import SPLIT_VALUES

    try:
        import datasets
    except ImportError:
        raise ConfigError("data.source", source, "a saved DatasetDict needs the datasets package; pip install datasets") from None
    try:
        loaded = datasets.load_from_disk(str(Path(source).expanduser()))
        frames = {name: _split_frame(split, datasets.ClassLabel) for name, split in loaded.items()} if isinstance(loaded, datasets.DatasetDict) else {}
    except Exception as error:  # datasets raises many types for a damaged folder (missing files, bad JSON, bad Arrow)
        raise ConfigError("data.source", source, f"not a readable saved DatasetDict ({type(error).__name__}: {_first_line(error)}); "
                                                 "save it again with DatasetDict.save_to_disk, or give a table file") from None
    if not isinstance(loaded, datasets.DatasetDict):
        raise ConfigError("data.source", source, "a saved Dataset, not a DatasetDict; save a DatasetDict with train and validation splits")
    unknown = sorted(set(loaded) - set(SPLIT_VALUES))
    if unknown:
        raise ConfigError("data.source", source, f"splits {unknown} name no split; name them train, validation and test")
    return {SPLIT_VALUES[name]: frame for name, frame in frames.items()}


def _split_frame(split, class_label):
    """One split of a DatasetDict as a table, class ids as their names."""
    frame = split.to_pandas()
    for column, feature in split.features.items():
        if isinstance(feature, class_label):
            frame[column] = [feature.int2str(int(value)) for value in frame[column]]
    return frame


def _image_readers(config: SweepConfig) -> dict:
    columns = _columns(config, "image_column", "label_column")

    def from_frame(frame, field, source, min_classes):
        base = Path(source.split(" (")[0]).expanduser().parent  # relative image paths start at the table's folder
        try:
            return images_in_table(frame, columns["image_column"], columns["label_column"], base, min_classes)
        except DataError as error:
            raise _data_error(error, field, source, columns) from None

    def read_source(field, source, min_classes):
        path = Path(source).expanduser()
        if path.is_dir():
            try:
                return images_in_folder(path, min_classes)
            except DataError as error:
                raise _data_error(error, field, source, columns) from None
        if path.is_file():
            return from_frame(_read_table(field, source, path), field, source, min_classes)
        raise ConfigError(field, source, f"no such folder or file ({_RELATIVE}); give a folder with one subfolder of images per class, or a CSV of image paths and labels")

    return {"read_source": read_source, "read_frame": _read_frame, "from_frame": from_frame, "read_dataset_dict": None}


def _text_data(config: SweepConfig, model_path: str) -> tuple[TrialData, EncodedSplit | None, Splits, int]:
    """Texts tokenised once: (the trials' data, the test split, the splits, pad token id)."""
    from transformers import AutoTokenizer

    splits = make_splits(config.data, **_text_readers(config))
    train, val = splits.train, splits.validation
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    max_length = config.task_data.max_length
    data = TrialData(
        train=encode(tokenizer, train.texts, train.labels, max_length),
        val=encode(tokenizer, val.texts, val.labels, max_length),
        val_noisy=encode(tokenizer, noisy_copies(val.texts, config.task_data.noisy_val_rate, config.task_data.split_seed), val.labels, max_length)
        if config.task_data.noisy_val_rate > 0 else None,
    )
    test = encode(tokenizer, splits.test.texts, splits.test.labels, max_length) if splits.test is not None else None
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return data, test, splits, pad_token_id


def _image_data(config: SweepConfig, model_path: str) -> tuple[TrialData, ImageSplit | None, Splits, int]:
    """Images resized and cropped once by the model's image processor: (the trials' data, the test split, the splits, 0)."""
    from transformers import AutoConfig, AutoImageProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

    model_config = AutoConfig.from_pretrained(model_path)
    if type(model_config) not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
        raise ConfigError("model", config.model, f"a {model_config.model_type} model cannot classify images; give a vision model (ViT, ResNet, ConvNeXt, ...)")
    try:
        processor = AutoImageProcessor.from_pretrained(model_path)
    except (OSError, ValueError):
        raise ConfigError("model", config.model, "no image processor beside the model (preprocessor_config.json); save the model's AutoImageProcessor with it") from None
    splits = make_splits(config.data, **_image_readers(config))
    channels = getattr(model_config, "num_channels", 3)
    try:
        data = TrialData(train=preprocess(processor, splits.train, channels), val=preprocess(processor, splits.validation, channels))
        test = preprocess(processor, splits.test, channels) if splits.test is not None else None
    except DataError as error:
        raise ConfigError(error.field, config.task_data.source, str(error)) from None
    return data, test, splits, 0


def _generation_readers(config: SweepConfig) -> dict:
    from trials.text_generation import prompt_responses

    data = config.task_data

    def from_frame(frame, field, source, min_classes):
        try:
            return prompt_responses(frame, data.prompt_column, data.response_column, data.messages_column)
        except DataError as error:
            columns = {name: getattr(data, name) for name in ("prompt_column", "response_column", "messages_column")}
            raise _data_error(error, field, source, columns) from None

    return {
        "read_source": lambda field, source, min_classes: from_frame(_read_frame(field, source), field, source, min_classes),
        "read_frame": _read_frame,
        "from_frame": from_frame,
        "read_dataset_dict": _read_dataset_dict,
    }


def _generation_data(config: SweepConfig, model_path: str):
    """Prompt/response pairs tokenised once, prompts masked out of the labels: (the trials' data,
    the test split, the splits, pad token id)."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from trials.text_generation import encode_pairs

    model_config = AutoConfig.from_pretrained(model_path)
    if type(model_config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ConfigError("model", config.model, f"a {model_config.model_type} model cannot generate text; give a causal language model (GPT-2, Llama, Qwen, SmolLM, ...)")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.eos_token_id is None:
        raise ConfigError("model", config.model, "its tokenizer has no end-of-sequence token, so generations cannot end; set eos_token and save the tokenizer again")
    splits = make_splits(config.data, **_generation_readers(config))
    max_length, max_new_tokens = config.task_data.max_length, config.task_data.max_new_tokens
    data = TrialData(train=encode_pairs(tokenizer, splits.train, max_length),
                     val=encode_pairs(tokenizer, splits.validation, max_length, max_new_tokens))  # generations start from val and test prompts
    test = encode_pairs(tokenizer, splits.test, max_length, max_new_tokens) if splits.test is not None else None
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return data, test, splits, pad_token_id


TASK_DATA = {TEXT_CLASSIFICATION: _text_data, IMAGE_CLASSIFICATION: _image_data, TEXT_GENERATION: _generation_data}


def _user_function(config: SweepConfig) -> FunctionRef:
    """The sweep's own training function, imported once here so that a mistake stops the sweep before it starts."""
    if config.trial.function is None:
        raise ConfigError("trial.function", MISSING, "give the training function as package.module:function or path/to/train.py:function")
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
    model_path = resolve_model(config.task_model)
    _check_unfreeze_depth(config, model_path)
    _check_model_settings(config, model_path)
    data, test, splits, pad_token_id = TASK_DATA[config.task](config, model_path)
    # a majority class means nothing to text generation (one "label")
    baseline = majority_baseline(data.train.labels, data.val.labels, len(splits.label_names)) if TASK_SPECS[config.task].labelled else {}
    return PreparedSweep(config, model_path, splits.label_names, pad_token_id, data, baseline, test=test, splits=splits)
