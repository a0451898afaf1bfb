"""The sweep file: a YAML document validated into :class:`SweepConfig`.

Unknown keys are rejected; every error names the field path, the value and the fix
(:mod:`orchestrator.sweep.config_errors` words pydantic's errors so). Paths are resolved against the
sweep file's folder (:mod:`orchestrator.sweep.paths`); search-space values are held against the built-in
hyperparameters' domains (:mod:`orchestrator.sweep.hyperparameter_checks`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from orchestrator.errors import MISSING, ConfigError
from orchestrator.search.registries import NotAGrid, check_known, grid_points
from orchestrator.search.search_space import (
    CategoricalParam,
    SearchSpace,
    numeric_text,
    presets,
    read_yaml_mapping,
    resolve_reference,
    yaml_reads_as_text,
)
from orchestrator.sweep.config_errors import config_error_from
from orchestrator.sweep.hyperparameter_checks import check_hyperparameters, check_points
from orchestrator.sweep.paths import ModelReference, base_dir_of
from orchestrator.sweep.sweep_sections import (
    NAME_PATTERN,
    REGISTERED_MODEL_PATTERN,
    Budget,
    ClusterConfig,
    ConfirmConfig,
    DataConfig,
    Objective,
    Resources,
    SamplerConfig,
    SchedulerConfig,
    Section,
    StorageConfig,
    TrialConfig,
)
from trials.hyperparameters import DOMAINS
from trials.result_keys import BOOKKEEPING
from trials.task_specs import MINIMIZED_METRICS, TASK_SPECS, TEXT_CLASSIFICATION, TaskName

DEFAULT_TASK = TEXT_CLASSIFICATION
# Keys our trials add to every report; a metric of a training function of your own cannot use them.
_RESERVED_METRICS = tuple(sorted(BOOKKEEPING))


class SweepConfig(Section):
    name: str = Field(pattern=NAME_PATTERN)
    task: TaskName = DEFAULT_TASK  # which built-in trials run: a name in trials.task_specs.TASK_SPECS
    objective: Objective = Objective()
    objectives: list[Objective] | None = None  # two or more: multi-objective search for the Pareto front
    model: ModelReference | None = None  # required by the built-in tasks; trial.function loads its own
    data: DataConfig | None = None  # likewise
    search_space: SearchSpace
    trial: TrialConfig = TrialConfig()
    budget: Budget = Budget()
    confirm: ConfirmConfig = ConfirmConfig()
    sampler: SamplerConfig = SamplerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    resources: Resources = Resources()
    storage: StorageConfig = Field(default_factory=dict, validate_default=True)  # validated: its paths need base_dir
    cluster: ClusterConfig = ClusterConfig()
    seed_trials: list[dict[str, Any]] = []  # known-good points, run first (once per study); unnamed parameters are sampled
    registered_model: str | None = Field(None, min_length=1, max_length=200, pattern=REGISTERED_MODEL_PATTERN)
    # MLflow Model Registry name: an invocation that beats the study's best registers a new version of it

    @field_validator("task", mode="before")  # before the Literal's check: our words for an unknown name
    @classmethod
    def _known_task(cls, task: Any) -> Any:
        return check_known(TASK_SPECS, task, "task") if isinstance(task, str) else task

    @field_validator("search_space", mode="before")
    @classmethod
    def _load_reference(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        path = resolve_reference(value, base_dir_of(info))
        if path is None:
            raise ValueError(f"no such file; give a path relative to the sweep file or a preset ({', '.join(presets())})")
        try:
            return read_yaml_mapping(path)
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML ({_yaml_problem(error)}); fix the syntax there") from None


    @model_validator(mode="before")
    @classmethod
    def _primary_objective(cls, raw: Any) -> Any:
        """With ``objectives:``, the first one is the primary ``objective`` (early stopping, "best")."""
        if not isinstance(raw, dict) or raw.get("objectives") is None:
            return raw
        if "objective" in raw:
            raise ConfigError("objectives", raw["objectives"], "give either objective (one metric) or objectives (several), not both")
        objectives = raw["objectives"]
        if not isinstance(objectives, list) or not objectives:
            raise ConfigError("objectives", objectives, "list one or more {metric, mode} mappings")
        return {**raw, "objective": objectives[0]}

    @property
    def objective_list(self) -> list[Objective]:
        return list(self.objectives) if self.objectives else [self.objective]

    @property
    def multi_objective(self) -> bool:
        return len(self.objective_list) > 1

    @property
    def task_model(self) -> str:
        """``model``, which the built-in tasks require (validation made sure it is given)."""
        if self.model is None:
            raise ConfigError("model", MISSING, "this key is required by the built-in tasks; add it")
        return self.model

    @property
    def task_data(self) -> DataConfig:
        """``data``, which the built-in tasks require (validation made sure it is given)."""
        if self.data is None:
            raise ConfigError("data", MISSING, "this key is required by the built-in tasks; add it")
        return self.data

    @property
    def user_function(self) -> bool:
        """True when trials run ``trial.function`` instead of the built-in fine-tuning of ``task``."""
        return self.trial.function is not None

    @model_validator(mode="after")
    def _numbers_are_numbers(self) -> SweepConfig:
        """A number YAML read as text (``1e-4``: no dot, no signed exponent) is refused as a fixed
        value or a choice of any parameter, whatever the trials run: nobody means it as a word."""
        def whole(name: str) -> bool:  # a built-in hyperparameter that takes whole numbers: 3e1 is written 30
            return not self.user_function and name in DOMAINS and DOMAINS[name].integer

        for name, param in self.search_space.params.items():
            text = next((c for c in param.choices if yaml_reads_as_text(c)), None) if isinstance(param, CategoricalParam) else None
            fix = numeric_text(text, whole(name))  # None unless text is a number written as text
            if text is not None and fix is not None:
                raise ConfigError(f"search_space.{name}", text, fix)
        for name, value in self.search_space.fixed.items():
            fix = numeric_text(value, whole(name))
            if yaml_reads_as_text(value) and fix is not None:
                raise ConfigError(f"search_space.{name}", value, fix)
        return self

    @model_validator(mode="after")
    def _fits_the_trainable(self) -> SweepConfig:
        """A built-in task needs a model and data, and knows its hyperparameters and metrics; a
        training function of your own loads its own and may report metrics of any name."""
        if self.user_function:
            self._check_user_function()
        else:
            self._check_task()
        return self

    @model_validator(mode="after")
    def _precision_fits_the_resources(self) -> SweepConfig:
        if self.trial.precision in ("bf16", "fp16") and self.resources.gpu == 0:
            raise ConfigError("trial.precision", self.trial.precision,
                              "it autocasts on CUDA GPUs and these trials run on CPU (resources.gpu: 0); use auto or fp32, or ask for resources.gpu")
        return self

    @model_validator(mode="after")
    def _registrable(self) -> SweepConfig:
        if self.registered_model is not None and self.user_function:
            raise ConfigError("registered_model", self.registered_model,
                              "built-in tasks' models are registered, not trial.function's; remove it and log the model from the function")
        return self

    def _check_user_function(self) -> None:
        for key in ("task", "model", "data"):
            if key in self.model_fields_set:
                raise ConfigError(key, self.data.source if key == "data" and self.data is not None else getattr(self, key),
                                  "trial.function loads its own model and data; remove this key (fixed search_space values reach the function)")
        if self.confirm.top_k:
            raise ConfigError("confirm.top_k", self.confirm.top_k, "confirmation retrains with new seeds, which the built-in fine-tuning sets; trial.function seeds itself: remove confirm")
        built_in = sorted(self.trial.model_fields_set & {"eval_batch_size", "checkpoint", "seed", "precision", "gradient_checkpointing"})
        if built_in:
            raise ConfigError(f"trial.{built_in[0]}", getattr(self.trial, built_in[0]),
                              "it sets the built-in fine-tuning; trial.function evaluates, checkpoints and seeds itself (fixed search_space values reach it)")
        reserved = next((o.metric for o in self.objective_list if o.metric in _RESERVED_METRICS), None)
        if reserved is not None:
            raise ConfigError("objectives" if self.objectives else "objective.metric", reserved,
                              f"reports use {', '.join(_RESERVED_METRICS)} for bookkeeping; report the metric under another name")

    def _check_task(self) -> None:
        for key in ("model", "data"):
            if getattr(self, key) is None:
                raise ConfigError(key, MISSING, "this key is required; add it (or set trial.function to train with a function of your own)")
        data = self.task_data
        readers: dict[str, list[str]] = {}  # data keys this task does not read, and the tasks that do
        for name, spec in TASK_SPECS.items():
            for key in sorted(spec.data_keys - TASK_SPECS[self.task].data_keys):
                readers.setdefault(key, []).append(name)
        wrong = sorted(data.model_fields_set & set(readers))
        if wrong:
            names = readers[wrong[0]]
            raise ConfigError(f"data.{wrong[0]}", getattr(data, wrong[0]),
                              f"{' and '.join(names)} read{'s' if len(names) == 1 else ''} it, not {self.task}; remove it")
        task = TASK_SPECS[self.task]
        check_hyperparameters(self.search_space, task.hyperparameters)
        for index, objective in enumerate(self.objective_list):
            field = f"objectives.{index}.metric" if self.objectives else "objective.metric"
            if objective.metric not in task.metrics:
                raise ConfigError(field, objective.metric, f"trials never report it; {self.task} trials report {', '.join(task.metrics)}")
            better = "min" if objective.metric in MINIMIZED_METRICS else "max"
            if objective.mode != better:
                raise ConfigError(field.removesuffix("metric") + "mode", objective.mode,
                                  f"{objective.metric} is better {'lower' if better == 'min' else 'higher'}; set mode: {better}")
            if objective.metric.startswith("val_noisy_") and data.noisy_val_rate == 0:
                raise ConfigError("objectives" if self.objectives else field, objective.metric,
                                  "it is measured on noisy validation texts; set data.noisy_val_rate (e.g. 0.05)")

    @model_validator(mode="after")
    def _objectives_fit_the_search(self) -> SweepConfig:
        metrics = [objective.metric for objective in self.objective_list]
        if len(set(metrics)) != len(metrics):
            raise ConfigError("objectives", metrics, "each metric may appear once")
        if self.multi_objective and self.scheduler.name != "fifo":
            raise ConfigError("scheduler.name", self.scheduler.name, "schedulers stop trials on one metric; with several objectives use fifo")
        if self.multi_objective and self.registered_model is not None:
            raise ConfigError("registered_model", self.registered_model, "a registered model needs one best trial; with several objectives remove it")
        if self.multi_objective and self.confirm.top_k:
            raise ConfigError("confirm.top_k", self.confirm.top_k, "confirmation ranks configurations on one objective; with several remove confirm")
        if self.multi_objective and self.sampler.name == "cmaes":
            raise ConfigError("sampler.name", "cmaes", "CMA-ES optimises one objective; with several use nsga2, tpe, gp, qmc, random or grid")
        return self

    @model_validator(mode="after")
    def _fits_search_space(self) -> SweepConfig:
        check_points(self.search_space, self.seed_trials, "seed_trials")
        if self.sampler.name == "grid":
            try:
                grid_points(self.search_space)
            except NotAGrid as error:
                field = f"search_space.{error.name}" if error.name else "search_space"
                value = self.search_space.params[error.name].model_dump() if error.name else "grid"
                raise ConfigError(field, value, error.fix) from None
        return self


def parse_sweep(raw: Any, base_dir: Path) -> SweepConfig:
    """Validate a parsed sweep mapping; raise :class:`ConfigError` on the first problem."""
    if not isinstance(raw, dict):
        raise ConfigError("<sweep file>", raw, "the file must be a YAML mapping of sections (name, model, data, ...)")
    try:
        return SweepConfig.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as error:
        raise config_error_from(error, SweepConfig) from None


def read_yaml_file(path: Path, field: str, what: str) -> Any:
    """The parsed YAML at ``path``; a missing file or bad syntax is a :class:`ConfigError` on ``field``."""
    if not path.is_file():
        raise ConfigError(field, str(path), f"no such file; pass the path of {what}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(field, str(path), f"not valid YAML ({_yaml_problem(error)}); fix the syntax there") from None


def load_sweep(path: str | os.PathLike[str]) -> SweepConfig:
    """Read and validate a sweep file. Touches nothing but the file (and the search space it names)."""
    path = Path(path)
    raw = read_yaml_file(path, "<sweep file>", "a sweep YAML file")
    return parse_sweep(raw, path.resolve().parent)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what, e.g. ``line 2, column 8: mapping values are not allowed here`` (the caller names the file)."""
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if problem is None:
        return " ".join(str(error).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem
