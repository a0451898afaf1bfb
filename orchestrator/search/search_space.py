"""Declarative search spaces: YAML mappings of parameter name to float, int or categorical.

Example (``search_spaces/text_classification.yaml``)::

    learning_rate: {type: float, low: 1.0e-5, high: 5.0e-4, log: true}
    batch_size: {type: categorical, choices: [16, 32]}
    unfreeze_depth: {type: int, low: 0, high: 6}
    label_smoothing: 0.1          # a plain value fixes the parameter

Each entry converts to an Optuna distribution; fixed values pass straight to every trial.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna.distributions as od
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PRESET_DIR = Path(__file__).resolve().parents[2] / "search_spaces"  # beside the orchestrator package


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_EXPONENT = re.compile(r"([-+]?)(\d*)\.?(\d*)([eE])([-+]?)(\d+)")


def numeric_text(value: object, whole: bool = False) -> str | None:
    """How to write a number that reached the search space as text, or None if ``value`` is no
    such text. YAML 1.1 (PyYAML) reads ``1e-4`` as a string: a float needs a dot and a signed
    exponent (``1.0e-4``); a number in quotes (``'0.1'``) is a string too. ``whole``: the field
    takes whole numbers, so ``1e3`` is better written ``1000``."""
    if not isinstance(value, str) or not _NUMBER.fullmatch(value.strip()):
        return None
    text = value.strip()
    if not isinstance(yaml.safe_load(text), str):
        return f"the number is quoted, so it is text; write {text} without quotes"
    number = float(text)
    return f"YAML reads {text} as text; write {int(number) if whole and number.is_integer() else _as_yaml_float(text)}"


def yaml_reads_as_text(value: object) -> bool:
    """``value`` is a number that YAML read as text because of how it is written (``1e-4``), not
    because it was quoted: nobody means it as a word."""
    return isinstance(value, str) and numeric_text(value) is not None and isinstance(yaml.safe_load(value.strip()), str)


def _as_yaml_float(text: str) -> str:
    """``1e-4`` as YAML 1.1 reads a float: ``1.0e-4`` (``2e3``: ``2.0e+3``)."""
    match = _EXPONENT.fullmatch(text)
    if match:
        sign, whole, fraction, e, exponent_sign, exponent = match.groups()
        written = f"{sign}{whole or '0'}.{fraction or '0'}{e}{exponent_sign or '+'}{exponent}"
        if yaml.safe_load(written) == float(text):
            return written
    return repr(float(text))


def _refuse_numeric_text(value: Any, whole: bool = False) -> Any:
    """A numeric field's before-validator: pydantic would turn ``'1e-4'`` into a number quietly,
    where a value of the same spelling elsewhere in the space stays text; say how to write it."""
    fix = numeric_text(value, whole)
    if fix is not None:
        raise ValueError(fix)
    return value


def _refuse_whole_numeric_text(value: Any) -> Any:
    return _refuse_numeric_text(value, whole=True)


class ValueRange(BaseModel):
    """``{min: 1}``, ``{max: 0.5}`` or both: the parent's value lies in this closed range."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: float | None = None
    max: float | None = None

    def holds(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


Condition = list[bool | int | float | str | None] | ValueRange


def _holds(condition: Condition, value: Any) -> bool:
    return condition.holds(value) if isinstance(condition, ValueRange) else value in condition


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Searched only when every named parameter's value matches: a list of values or {min, max}.
    when: dict[str, Condition] | None = None

    @field_validator("when", mode="before")
    @classmethod
    def _numbers_in_conditions(cls, when: Any) -> Any:
        """``{min: 1e-4}`` or ``[1e-4]``: a number YAML read as text never matches a value."""
        for condition in (when.values() if isinstance(when, dict) else ()):
            if isinstance(condition, dict):
                values = [condition.get("min"), condition.get("max")]
                text = next((fix for fix in map(numeric_text, values) if fix is not None), None)
            else:
                text = next((numeric_text(value) for value in condition if yaml_reads_as_text(value)), None) if isinstance(condition, list) else None
            if text is not None:
                raise ValueError(text)
        return when


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    _numbers = field_validator("low", "high", "step", mode="before")(_refuse_numeric_text)

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def distribution(self) -> od.FloatDistribution:
        return od.FloatDistribution(self.low, self.high, log=self.log, step=self.step)


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1

    _numbers = field_validator("low", "high", "step", mode="before")(_refuse_whole_numeric_text)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        if self.step < 1:
            raise ValueError(f"step must be at least 1, got {self.step}")
        return self

    def distribution(self) -> od.IntDistribution:
        return od.IntDistribution(self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[bool | int | float | str | None]

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        if not self.choices:
            raise ValueError("choices is empty; list at least one value")
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be distinct, got {self.choices}")
        return self

    def distribution(self) -> od.CategoricalDistribution:
        return od.CategoricalDistribution(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
Fixed = bool | int | float | str | None


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low must not exceed high, got low={low}, high={high}; swap them")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0, got low={low}; raise low or set log: false")
    if log and step is not None:
        raise ValueError("log scale and step cannot be combined; drop one of them")
    if step is not None and step <= 0:
        raise ValueError(f"step must be positive, got {step}")


class SearchSpace(BaseModel):
    """Searched parameters (``params``) and fixed ones (``fixed``), keyed by hyperparameter name.

    Which names are valid depends on what the trials run; the sweep file checks them
    (:class:`orchestrator.sweep.config.SweepConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: dict[str, Param]
    fixed: dict[str, Fixed] = {}

    @model_validator(mode="before")
    @classmethod
    def _split_fixed(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or "params" in raw:
            return raw
        params = {name: spec for name, spec in raw.items() if isinstance(spec, dict)}
        fixed = {name: spec for name, spec in raw.items() if not isinstance(spec, dict)}
        return {"params": params, "fixed": fixed}

    @model_validator(mode="after")
    def _searches_something(self) -> SearchSpace:
        if not self.params:
            raise ValueError("the search space searches nothing; give at least one parameter a type")
        return self

    @model_validator(mode="after")
    def _conditions_name_searched_parameters(self) -> SearchSpace:
        for name, param in self.params.items():
            for parent in (param.when or {}):
                if parent == name:
                    raise ValueError(f"{name}.when names {name} itself; a condition must name another parameter")
                if parent not in self.params and parent not in self.fixed:
                    raise ValueError(f"{name}.when names {parent!r}, which the search space does not define; define it or drop the condition")
        self.order()  # raises on a cycle
        return self

    @property
    def conditional(self) -> bool:
        return any(param.when for param in self.params.values())

    def order(self) -> list[str]:
        """Searched parameter names, each after the parameters its condition names."""
        ordered: list[str] = []
        pending = dict(self.params)
        while pending:
            ready = [name for name, param in pending.items() if all(p in ordered or p not in pending for p in (param.when or {}))]
            if not ready:
                raise ValueError(f"the conditions of {', '.join(sorted(pending))} depend on each other in a circle; break the cycle")
            for name in ready:
                ordered.append(name)
                del pending[name]
        return ordered

    def sample(self, trial) -> dict[str, Any]:
        """Suggest every active parameter on an Optuna ``trial`` (define-by-run): a parameter whose
        condition fails is not searched, and the trial uses its default."""
        values: dict[str, Any] = dict(self.fixed)
        for name in self.order():
            param = self.params[name]
            if param.when and not all(parent in values and _holds(condition, values[parent]) for parent, condition in param.when.items()):
                continue
            values[name] = _suggest(trial, name, param.distribution())
        return values

    def check_point(self, point: dict) -> None:
        """Raise :class:`PointError` unless ``point`` gives searched parameters values inside their ranges."""
        if not isinstance(point, dict) or not point:
            raise PointError(None, point, "each point is a mapping of parameter names to values, e.g. {learning_rate: 3.0e-5}")
        distributions = self.distributions()
        for name, value in point.items():
            if name not in distributions:
                where = "it is fixed in the search space" if name in self.fixed else "not a searched parameter"
                raise PointError(name, value, f"{where}; searched parameters are {', '.join(distributions)}")
            distribution = distributions[name]
            text = numeric_text(value, whole=isinstance(distribution, od.IntDistribution))
            if text is not None and (not isinstance(distribution, od.CategoricalDistribution) or value not in distribution.choices):
                raise PointError(name, value, text)  # Optuna would take '1e-4' as 0.0001 for a float and enqueue the text
            try:
                inside = distribution._contains(distribution.to_internal_repr(value))
            except (ValueError, TypeError):
                inside = False
            if not inside:
                raise PointError(name, value, f"outside the search space ({_describe(self.params[name])}); pick a value inside it")

    def distributions(self) -> dict[str, od.BaseDistribution]:
        return {name: param.distribution() for name, param in self.params.items()}

    def bounds(self, name: str) -> tuple[Any, Any] | None:
        """(low, high) of a numeric parameter, the fixed value twice, or None if absent."""
        if name in self.fixed:
            return self.fixed[name], self.fixed[name]
        param = self.params.get(name)
        if isinstance(param, (FloatParam, IntParam)):
            return param.low, param.high
        if isinstance(param, CategoricalParam):
            numeric = [c for c in param.choices if isinstance(c, (int, float))]
            return (min(numeric), max(numeric)) if numeric else None
        return None


class PointError(ValueError):
    """A seed point (``seed_trials`` or ``--enqueue``) does not fit the search space."""

    def __init__(self, name: str | None, value: object, fix: str) -> None:
        self.name, self.value, self.fix = name, value, fix
        super().__init__(fix)


def _suggest(trial, name: str, distribution: od.BaseDistribution) -> Any:
    if isinstance(distribution, od.CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, od.IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    if not isinstance(distribution, od.FloatDistribution):
        raise TypeError(f"{name}: no way to suggest from {type(distribution).__name__}")
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)


def _describe(param: FloatParam | IntParam | CategoricalParam) -> str:
    if isinstance(param, CategoricalParam):
        return f"one of {param.choices}"
    return f"{param.low}..{param.high}" + (f" by {param.step}" if param.step not in (None, 1) else "")


def space_changes(used: dict[str, od.BaseDistribution], wanted: dict[str, od.BaseDistribution]) -> list[str]:
    """Parameters whose distribution in ``wanted`` Optuna cannot mix with ``used`` (the study's
    earlier trials): another kind, another log scale, other categorical choices. A numeric range
    that widens or narrows, or a parameter added or dropped, is compatible."""
    changes = []
    for name, new in wanted.items():
        old = used.get(name)
        if old is None:
            continue
        try:
            od.check_distribution_compatibility(old, new)
        except ValueError:
            changes.append(f"{name} ({_short(old)} -> {_short(new)})")
    return changes


def _short(distribution: od.BaseDistribution) -> str:
    if isinstance(distribution, od.CategoricalDistribution):
        return f"choices {list(distribution.choices)}"
    if not isinstance(distribution, (od.IntDistribution, od.FloatDistribution)):
        return type(distribution).__name__
    kind = "int" if isinstance(distribution, od.IntDistribution) else "float"
    return f"{kind} {distribution.low}..{distribution.high}{' log' if distribution.log else ''}"


def resolve_reference(reference: str, base_dir: Path) -> Path | None:
    """Find a search-space file: a path relative to ``base_dir`` or the cwd, or a preset name."""
    candidates = [base_dir / reference, Path(reference), PRESET_DIR / reference, PRESET_DIR / f"{reference}.yaml"]
    return next((path for path in candidates if path.is_file()), None)


def presets() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def read_yaml_mapping(path: Path) -> dict:
    loaded = yaml.safe_load(path.read_text())
    return loaded if loaded is not None else {}
