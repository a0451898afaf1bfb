"""Whether the values of a search space fit what will receive them.

The built-in trials know their hyperparameters: :func:`check_hyperparameters` makes sure every
parameter of a sweep's search space is one of them and that every value the space can give it
(each end of a range as its step reaches it, each choice, the fixed value) lies in that
hyperparameter's domain. :func:`check_points` makes sure given points (``seed_trials``,
``hpo run --enqueue``) lie in the search space. A problem is a :class:`ConfigError` naming the
field, the value and the fix.
"""

from __future__ import annotations

import math
import warnings

import yaml

from orchestrator.errors import UNKNOWN_KEY, ConfigError
from orchestrator.search.search_space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    PointError,
    SearchSpace,
    numeric_text,
)
from trials.hyperparameters import CHOICES, DOMAINS, LORA_HYPERPARAMETERS, Domain, Hyperparameters


def check_hyperparameters(space: SearchSpace, valid: tuple[str, ...]) -> None:
    """Every parameter is one the built-in trials understand, with a value they know."""
    for name in [*space.params, *space.fixed]:
        if name not in valid:
            raise ConfigError(f"search_space.{name}", UNKNOWN_KEY, f"unknown parameter {name!r}; valid names are {', '.join(valid)}")
    for name, choices in CHOICES.items():
        param = space.params.get(name)
        if param is not None and not isinstance(param, CategoricalParam):
            raise ConfigError(f"search_space.{name}", param.model_dump(exclude_none=True), f"{name} takes {', '.join(choices)}; make it type: categorical")
        values = param.choices if param is not None else [space.fixed[name]] if name in space.fixed else []
        unknown = [value for value in values if value not in choices]
        if unknown:
            raise ConfigError(f"search_space.{name}", unknown[0] if len(values) == 1 else values, f"{name} takes {', '.join(choices)}, got {unknown}; use one of them, e.g. {name}: {choices[0]}")
    for name, domain in DOMAINS.items():
        if name in valid:
            _check_domain(space, name, domain)
    _check_lora_settings(space)


def method_values(space: SearchSpace) -> list:
    """Every ``method`` a trial of ``space`` can run with."""
    param = space.params.get("method")
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    return [space.fixed.get("method", Hyperparameters().method)]


def lora_targets_values(space: SearchSpace) -> list:
    """Every ``lora_targets`` a LoRA trial of ``space`` can run with; none when no trial uses LoRA."""
    if "lora" not in method_values(space):
        return []
    param = space.params.get("lora_targets")
    return list(param.choices) if isinstance(param, CategoricalParam) else [space.fixed.get("lora_targets", Hyperparameters().lora_targets)]


def _shown(space: SearchSpace, name: str) -> object:
    return space.params[name].model_dump(exclude_defaults=True) if name in space.params else space.fixed[name]


def _check_lora_settings(space: SearchSpace) -> None:
    """LoRA settings reach only trials that use LoRA: a search never spends a dimension on
    settings that a full fine-tune ignores."""
    methods = method_values(space)
    named = [name for name in LORA_HYPERPARAMETERS if name in space.params or name in space.fixed]
    for name in named:
        value = _shown(space, name)
        if "lora" not in methods:
            raise ConfigError(f"search_space.{name}", value, "LoRA settings apply only with method: lora; add method: lora (or search it), or remove it")
        condition = (space.params[name].when or {}).get("method") if name in space.params else None
        if "full" in methods and name in space.params and (not isinstance(condition, list) or "full" in condition):
            raise ConfigError(f"search_space.{name}", value, "searched for full fine-tuning trials too, which ignore it; add when: {method: [lora]}")
    if "lora_alpha" in named and "lora_alpha_ratio" in named:
        raise ConfigError("search_space.lora_alpha", _shown(space, "lora_alpha"), "give lora_alpha or lora_alpha_ratio (alpha = ratio x rank), not both; remove one")


def _check_domain(space: SearchSpace, name: str, domain: Domain) -> None:
    """Every value the search space can give ``name`` (the ends of a range, as its step reaches
    them; each choice; the fixed value) lies in the hyperparameter's domain."""
    field = f"search_space.{name}"
    param = space.params.get(name)
    if isinstance(param, (FloatParam, IntParam)):
        shown = param.model_dump(exclude_defaults=True)
        if domain.integer and isinstance(param, FloatParam):
            raise ConfigError(field, shown, f"{name} must be {domain}; make it type: int")
        with warnings.catch_warnings():  # Optuna warns when it lowers high to the last value the step reaches
            warnings.simplefilter("ignore")
            distribution = param.distribution()
        low, high = distribution.low, distribution.high
        fixes = [fix for end, value in (("low", low), ("high", high)) for fix in _range_end_fixes(end, value, domain)]
        if fixes:
            reach = f" (with step {param.step:g} the highest value is {high:g})" if high != param.high else ""
            raise ConfigError(field, shown, f"{name} must be {domain}{reach}; {' and '.join(fixes)}")
        return
    in_choices = isinstance(param, CategoricalParam)
    for value in param.choices if isinstance(param, CategoricalParam) else [space.fixed[name]] if name in space.fixed else []:
        problem = _value_problem(name, value, domain, in_choices)
        if problem is not None:
            raise ConfigError(field, value, problem)


def _range_end_fixes(end: str, value: float, domain: Domain) -> list[str]:
    if not math.isfinite(value):
        return [f"make {end} a finite number"]
    fixes = []
    if not domain.above_low(value):
        fixes.append(f"raise {end} {'above' if domain.low_open else 'to'} {domain.low:g}")
    if not domain.below_high(value):
        fixes.append(f"lower {end} {'below' if domain.high_open else 'to'} {domain.high:g}")
    return fixes


def _value_problem(name: str, value: object, domain: Domain, in_choices: bool) -> str | None:
    """Why ``value`` (a choice, or the fixed value) cannot be ``name``, with the fix; None if it can."""
    if value is None and domain.nullable:
        return None
    text = numeric_text(value, whole=domain.integer)
    if text is not None:
        return text
    if domain.integer and isinstance(value, float) and value.is_integer() and int(value) in domain:
        return f"{name} must be {domain}; write {int(value)}, not {value}"
    if value in domain:
        return None
    default = getattr(Hyperparameters(), name)
    fix = f"drop {_yaml(value)} from choices" if in_choices else "change it, or remove it to use the default" + ("" if default is None else f" ({default:g})")
    kind = "null" if value is None else "true/false" if isinstance(value, bool) else "text" if isinstance(value, str) else None
    return f"{name} must be {domain}{f', not {kind}' if kind else ''}; {fix}"


def _yaml(value: object) -> str:
    """A value as the sweep file writes it: ``null``, ``true``, ``0.5``, ``abc``."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def check_points(space: SearchSpace, points: list, field: str) -> None:
    """Raise :class:`ConfigError` naming ``field[i].parameter`` for the first point outside ``space``."""
    for index, point in enumerate(points):
        try:
            space.check_point(point)
        except PointError as error:
            where = f"{field}[{index}]" + (f".{error.name}" if error.name else "")
            raise ConfigError(where, error.value, error.fix) from None
