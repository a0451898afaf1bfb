"""Pydantic's validation errors of a sweep file, said as one line: field, value and fix.

:func:`config_error_from` turns the first of pydantic's errors into a :class:`ConfigError` in
our words: a misspelt key gets the key it was meant to be, an invalid value plain advice
instead of pydantic's wording and, where one helps, an example of a valid value (from a table
of examples or the field's default); the count of further problems follows. It walks the fields
of the model validated (:class:`~orchestrator.sweep.config.SweepConfig`) to find the section holding the key.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.errors import MISSING, UNKNOWN_KEY, ConfigError
from orchestrator.search.search_space import numeric_text, yaml_reads_as_text
from orchestrator.sweep import default_stores
from orchestrator.sweep.sweep_sections import NAME_PATTERN, REGISTERED_MODEL_PATTERN, annotation_options

_NOISE = {"params", "float", "int", "categorical", "function-after", "function-before", "function-wrap"}

# Plain advice for pydantic's error types, instead of its wording; the names in braces come from
# the error's context. An example follows: _EXAMPLES by field path, else the key's default.
_ADVICE = {
    "model_type": "give a mapping of its keys",
    "dict_type": "give a mapping",
    "union_tag_invalid": "type {tag!r} is not one of {expected_tags}",
    "union_tag_not_found": "give its type (float, int or categorical), or a plain value to fix the parameter",
    "literal_error": "use {expected}",
    "int_parsing": "give a whole number",
    "int_type": "give a whole number",
    "int_from_float": "give a whole number",
    "float_parsing": "give a number",
    "float_type": "give a number",
    "bool_parsing": "give true or false",
    "bool_type": "give true or false",
    "string_type": "give a text value",
    "list_type": "give a YAML list",
    "greater_than_equal": "give {ge:g} or more",
    "greater_than": "give more than {gt:g}",
    "less_than_equal": "give {le:g} or less",
    "less_than": "give less than {lt:g}",
    "string_too_short": "give at least {min_length} character(s)",
    "string_too_long": "give at most {max_length} characters",
}
_PATTERN_ADVICE = {
    NAME_PATTERN: "use letters, digits, '.', '_' and '-', starting with a letter or digit (at most 100)",
    REGISTERED_MODEL_PATTERN: "a registered model's name cannot contain '/', ':' or '%'",
}
_EXAMPLES = {
    "name": "tweets-minilm",
    "model": "bundled:minilm-l6",
    "objective": "{metric: val_f1_macro, mode: max}",
    "objectives": "[{metric: val_f1_macro, mode: max}, {metric: trainable_params, mode: min}]",
    "data": "{source: data.csv, text_column: text, label_column: label}",
    "search_space": "{learning_rate: {type: float, low: 1.0e-5, high: 5.0e-4, log: true}}",
    "trial": "{max_epochs: 3}",
    "budget": "{n_trials: 8, max_concurrent: 2}",
    "sampler": "{name: tpe, seed: 0}",
    "scheduler": "{name: asha, grace_period: 1}",
    "resources": "{cpu: 1, gpu: 0}",
    "storage": f"{{study_db: {default_stores.STUDY_DB}, mlflow: {default_stores.MLFLOW}}}",
    "cluster": "{address: auto}",
    "seed_trials": "[{learning_rate: 3.0e-5, batch_size: 32}]",
    "registered_model": "tweets-classifier",
    "data.source": "data.csv",
    "objective.metric": "val_f1_macro",
    "search_space.*": "{type: float, low: 0.0, high: 0.3}",  # * is any parameter
    "search_space.*.choices": "[16, 32]",
    "search_space.*.low": "0.0",
    "search_space.*.high": "0.3",
}
_WITH_EXAMPLE = {*_ADVICE, "missing", "string_pattern_mismatch"}


def config_error_from(error: ValidationError, root: type[BaseModel]) -> ConfigError:
    """Turn pydantic's first error in validating ``root`` into a one-line :class:`ConfigError` with
    plain advice and an example.

    A misspelt key comes first: pydantic also reports the key it was meant to be as missing."""
    errors = error.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc, kind, value = first["loc"], first["type"], first.get("input")
    location = [str(part) for part in loc if not (isinstance(part, str) and part.split("[")[0] in _NOISE)]
    field = ".".join(location) or "<sweep file>"
    key = location[-1] if location else field
    explained = 1
    if kind == "extra_forbidden":
        valid = [name for model in _models(_holder(root, loc)) for name in model.model_fields]
        close = get_close_matches(key, valid, n=1)
        if close:
            fix = f"did you mean {close[0]!r}?"
            explained += sum(1 for e in errors if e["type"] == "missing" and e["loc"] == (*loc[:-1], close[0]))
        else:
            listed = f"valid keys: {', '.join(valid)}" if valid else "see the README"
            fix = f"remove it or check its spelling ({listed})"
        value = UNKNOWN_KEY
    elif kind == "missing":
        fix, value = "this key is required; add it", MISSING
    elif kind == "int_parsing" and yaml_reads_as_text(value) and float(value).is_integer() and (advice := numeric_text(value, whole=True)):
        fix = advice  # pydantic reads '1000' or 1.0e+3 as an int, but not '1e3'
    elif kind == "string_pattern_mismatch" and first.get("ctx", {}).get("pattern") in _PATTERN_ADVICE:
        fix = _PATTERN_ADVICE[first["ctx"]["pattern"]]
    elif kind in _ADVICE:
        fix = _ADVICE[kind].format(**first.get("ctx", {}))
    else:
        fix = first["msg"].removeprefix("Value error, ")
    example = _example(root, loc, location, value) if kind in _WITH_EXAMPLE else None
    if example is not None:
        fix += f", e.g. {key}: {example}"
    more = len(errors) - explained
    if more:
        fix += f" (and {more} more problem{'s' * (more > 1)})"
    return ConfigError(field, value, fix)


def _example(root: type[BaseModel], loc: tuple, location: list[str], value: Any) -> str | None:
    """A value to show for the key at ``loc``: ``{name: asha}`` for a section given as its name,
    else the _EXAMPLES entry, else the key's default; None without one."""
    key = location[-1] if location else None
    fields = [model.model_fields[key] for model in _models(_holder(root, loc)) if key in model.model_fields]
    sections = [model for field in fields for model in _models(field.annotation)]
    if sections and isinstance(value, str) and "name" in sections[0].model_fields:  # scheduler: asha
        return f"{{name: {value}}}"
    path = ["search_space", "*", *location[2:]] if location[:1] == ["search_space"] and len(location) > 1 else location
    if ".".join(path) in _EXAMPLES:  # search_space.dropout.low is search_space.*.low
        return _EXAMPLES[".".join(path)]
    default = fields[0].default if fields else None
    if isinstance(default, (bool, int, float, str)):
        return yaml.safe_dump(default, default_flow_style=True).removesuffix("\n...\n").strip()
    return None


def _holder(root: type[BaseModel], loc: tuple) -> Any:
    """The annotation of the section of ``root`` that holds the last key of ``loc`` (pydantic's error location)."""
    annotation: Any = root
    for part in loc[:-1]:
        annotation = _inside(annotation, part)
    return annotation


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [option for option in annotation_options(annotation) if _is_model(option)]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _inside(annotation: Any, part: Any) -> Any:
    """The annotation one step down ``part``: a model's field, a dict's or a list's values, or the
    member of a tagged union (search-space parameters) whose ``type`` is ``part``."""
    for option in annotation_options(annotation):
        if _is_model(option) and part in option.model_fields:
            return option.model_fields[part].annotation
        if get_origin(option) is dict and isinstance(part, str):
            return get_args(option)[1]
        if get_origin(option) is list and isinstance(part, int):
            return get_args(option)[0]
    tagged = [model for model in _models(annotation) if "type" in model.model_fields and part in get_args(model.model_fields["type"].annotation)]
    return tagged[0] if tagged else None
