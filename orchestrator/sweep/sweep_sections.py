"""The sections of a sweep file (``objective``, ``data``, ``trial``, ``confirm``, ``budget``,
``sampler``, ``scheduler``, ``resources``, ``storage``, ``cluster``), each checked on its own;
:class:`orchestrator.sweep.config.SweepConfig` holds them and checks them against each other."""

from __future__ import annotations

import os
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from orchestrator.errors import ConfigError
from orchestrator.search.registries import SAMPLERS, SCHEDULERS, SamplerName, SchedulerName, check_known
from orchestrator.secrets import remember_substitutions, remember_url
from orchestrator.sweep import default_stores
from orchestrator.sweep.paths import DatabaseURL, LocalPath, base_dir_of
from trials.objective import Mode
from trials.precision import PRECISIONS, PrecisionName
from trials.user_function import FunctionRef, UserFunctionError


class Section(BaseModel):
    """One part of the sweep file: unknown keys are refused, and a parsed sweep never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans_as_words(cls, raw: Any) -> Any:
        """YAML 1.1 reads ``off``, ``on``, ``yes`` and ``no`` as booleans: a key whose allowed words
        include one (``cache_frozen: off``) gets the word back."""
        if not isinstance(raw, dict):
            return raw
        return {key: yaml_word(value, cls.model_fields[key].annotation) if isinstance(value, bool) and key in cls.model_fields else value
                for key, value in raw.items()}


def yaml_word(value: bool, annotation: Any) -> Any:
    """The word of ``annotation``'s allowed words (its ``Literal`` members) that YAML reads as
    ``value``; ``value`` itself when the annotation takes booleans or no such word is allowed."""
    options = annotation_options(annotation)
    if bool in options:
        return value
    words = [word for option in options if get_origin(option) is Literal for word in get_args(option)
             if isinstance(word, str) and yaml.safe_load(word) is value]
    return words[0] if len(words) == 1 else value


def annotation_options(annotation: Any) -> list[Any]:
    """What an annotation allows: [X, NoneType] for X | None, the members of Annotated[Union[X, Y], ...]."""
    if get_origin(annotation) is Annotated:
        return annotation_options(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return [option for member in get_args(annotation) for option in annotation_options(member)]
    return [annotation]


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""What a sweep's name (its study's) must match."""
REGISTERED_MODEL_PATTERN = r"^[^/:%]+$"
"""What a registered model's name must match."""


class Objective(Section):
    metric: str = "val_f1_macro"  # checked against what the trials report in SweepConfig
    mode: Mode = "max"


MIN_SCORED_ROWS = 10
"""Fewer validation or test rows than this cannot score a model."""


class DataConfig(Section):
    source: LocalPath  # text: a table file or bundled:NAME; images: a folder with one subfolder per class, or a table of paths
    text_column: str | None = None  # default: the bundled dataset's, else "text"
    image_column: str | None = None  # a table of images: the column of paths (relative to the table's folder); default "image"
    label_column: str | None = None  # default: the bundled dataset's, else "label"
    max_length: int = Field(128, ge=8, le=8192)
    # Splits as you have them (see orchestrator/data/splits.py): files of the same format as source, or one
    # file whose split_column says train/validation/test, or source: a saved datasets.DatasetDict folder.
    validation: LocalPath | None = None
    test: LocalPath | None = None  # never seen by the search: scores the chosen configuration once at the end
    split_column: str | None = None
    split_seed: int = 0  # draws validation and test from one file; fixed for the study, apart from trial.seed
    train_size: int | None = Field(None, ge=2)  # rows drawn (split_seed) for training
    val_size: int | None = Field(None, ge=MIN_SCORED_ROWS)
    test_size: int | None = Field(None, ge=0)  # one file: rows drawn for the test split (default: automatic; 0: none)
    noisy_val_rate: float = Field(0.0, ge=0.0, le=0.5)  # > 0: also score the validation texts with this rate of typos
    # text-generation: a prompt and a response column (defaults "prompt", "response"), or one column of
    # chat messages (default "messages" when there is no prompt column); see trials/text_generation.py
    prompt_column: str | None = None
    response_column: str | None = None
    messages_column: str | None = None
    max_new_tokens: int = Field(32, ge=1, le=4096)  # length cap of the greedy generations scored every epoch
    generation_samples: int = Field(32, ge=1)  # validation prompts (a fixed sample) generated from every epoch

    @field_validator("test_size")
    @classmethod
    def _scores_or_none(cls, test_size: int | None) -> int | None:
        if test_size is not None and 0 < test_size < MIN_SCORED_ROWS:
            raise ValueError(f"a test split of fewer than {MIN_SCORED_ROWS} rows cannot score a model; give {MIN_SCORED_ROWS} or more, or 0 for no test split")
        return test_size

    @model_validator(mode="after")
    def _one_way_to_split(self) -> DataConfig:
        if self.split_column is not None and (self.validation is not None or self.test is not None):
            raise ConfigError("data.split_column", self.split_column, "give either a split column or validation/test files, not both")
        return self


class TrialConfig(Section):
    max_epochs: int = Field(3, ge=1, le=10_000)
    early_stopping_patience: int | None = Field(None, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    seed: int = 0
    checkpoint: bool = True  # save the training state every epoch, so a restarted trial continues
    max_failures: int = Field(1, ge=0)  # restarts of a trial whose worker failed (process died, node lost)
    # Evaluate and report this many times per epoch, so schedulers can stop a trial within its
    # first epoch; the evaluations within an epoch may score a fixed stratified subset of the
    # validation split (quick_val_size rows). The trial's value is always an epoch's end.
    evals_per_epoch: int = Field(1, ge=1, le=100)
    quick_val_size: int | None = Field(None, ge=10)
    # Frozen-layer cache (trials/frozen_cache.py): the frozen bottom layers run once per sweep and
    # trials start from their hidden states; off runs every layer in every step. Falls back to off
    # (with a note) when the cache would take more than cache_frozen_max_gb (default: a quarter of memory).
    cache_frozen: Literal["auto", "off"] = "auto"
    cache_frozen_max_gb: float | None = Field(None, gt=0)
    precision: PrecisionName = "auto"  # a name in trials.precision.PRECISIONS: autocast on CUDA GPUs (auto: bf16 where supported)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, more compute
    # A training function of your own instead of the built-in fine-tuning: "package.module:function"
    # or "path/to/train.py:function" (relative to the sweep file). It loads its own model and data.
    function: str | None = None

    # The Literal types hold the valid names; these checks run first, so an unknown name is told
    # in our words ("unknown precision; valid names are ..."), not pydantic's.
    @field_validator("precision", mode="before")
    @classmethod
    def _known_precision(cls, precision: Any) -> Any:
        return check_known(dict.fromkeys(PRECISIONS), precision, "precision") if isinstance(precision, str) else precision

    @field_validator("function")
    @classmethod
    def _function_reference(cls, function: str | None, info: ValidationInfo) -> str | None:
        if function is None:
            return None
        try:
            return str(FunctionRef.parse(function, base_dir_of(info)))
        except UserFunctionError as error:
            raise ValueError(str(error)) from None


class ConfirmConfig(Section):
    """After the search, train its ``top_k`` configurations again with ``seeds`` new training seeds
    each; the winner is the best mean. ``top_k: 0`` turns confirmation off."""

    top_k: int = Field(0, ge=0, le=50)
    seeds: int = Field(3, ge=1, le=20)


class Budget(Section):
    n_trials: int = Field(8, ge=1)
    max_concurrent: int = Field(1, ge=1)


class SamplerConfig(Section):
    name: SamplerName = "tpe"
    seed: int | None = 0
    n_startup_trials: int | None = Field(None, ge=0)

    @field_validator("name", mode="before")  # before the Literal's check: our words for an unknown name
    @classmethod
    def _known(cls, name: Any) -> Any:
        return check_known(SAMPLERS, name, "sampler") if isinstance(name, str) else name


class SchedulerConfig(Section):
    name: SchedulerName = "fifo"
    # asha, hyperband, median: epochs (fractions too) before a trial can be stopped; by default half
    # of trial.max_epochs, the setting the learning-curve replay found best (bench/README.md)
    grace_period: float | None = Field(None, gt=0)
    reduction_factor: float = Field(3.0, gt=1)  # asha, hyperband: keep the top 1/reduction_factor at each rung
    min_samples_required: int = Field(3, ge=1)  # median: trials to compare against before stopping one
    spare_warmup: bool = True  # never stop a trial while its learning rate still warms up

    @field_validator("name", mode="before")  # before the Literal's check: our words for an unknown name
    @classmethod
    def _known(cls, name: Any) -> Any:
        return check_known(SCHEDULERS, name, "scheduler") if isinstance(name, str) else name

    def grace(self, max_epochs: int) -> float:
        """Epochs a trial runs before a scheduler may stop it."""
        return self.grace_period if self.grace_period is not None else max_epochs / 2


class Resources(Section):
    """What one trial asks Ray for. ``gpu: 0.5`` packs two trials on one GPU."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    memory_gb: float | None = Field(None, gt=0)  # host memory Ray reserves for the trial


class StorageConfig(Section):
    model_config = ConfigDict(validate_default=True)  # the default files, too, lie beside the sweep file

    study_db: DatabaseURL = default_stores.STUDY_DB
    mlflow: DatabaseURL = default_stores.MLFLOW
    results_dir: LocalPath = default_stores.RESULTS_DIR

    @field_validator("study_db", "mlflow", "results_dir", mode="before")
    @classmethod
    def _expand_environment(cls, value: Any, info: ValidationInfo) -> Any:
        """Before the paths are resolved: ``${VAR}`` may hold an absolute path."""
        if not isinstance(value, str):
            return value
        expanded = os.path.expandvars(value)
        if "${" in expanded:
            raise ValueError("it names an environment variable that is not set; export it first")
        if info.field_name != "results_dir":
            remember_url(expanded)  # masked in everything we print or record from now on
            remember_substitutions(value, expanded)
        return expanded


class ClusterConfig(Section):
    address: str | None = None  # None starts a local Ray; "auto" or "ray://host:10001" joins a cluster
