"""Train, validation and test splits: the user's own, or drawn once per study.

The data comes as the user has it: one file (validation, and a test split when there are
enough rows, are drawn from it with ``data.split_seed``), separate files (``data.validation``,
``data.test``), one file with a ``data.split_column``, or a saved ``datasets.DatasetDict``.
Whatever the form, the result is a :class:`Splits` whose ``test`` part stays on the driver:
trials get only train and validation, so no search decision ever reads the test split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.errors import ConfigError
from orchestrator.sweep.sweep_sections import MIN_SCORED_ROWS

SPLIT_VALUES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation", "test": "test"}
"""Values of a split column (lower-cased) and the split each names; also a DatasetDict's split names."""
AUTO_TEST_MIN_ROWS = 500
"""One file and no ``data.test_size``: a test split (as large as validation) is drawn when the data has this many rows."""

Labelled = Any  # trials.data.LabelledTexts, trials.images.LabelledImages or trials.text_generation.PromptResponses: labels, label_names, take(rows)
ReadFrame = Callable[[str, str], pd.DataFrame]  # (field, source) -> table
FromFrame = Callable[[pd.DataFrame, str, str, int], Labelled]  # (table, field, source, min_classes) -> labelled rows
ReadSource = Callable[[str, str, int], Labelled]  # (field, source, min_classes) -> labelled rows


@dataclass(frozen=True)
class Splits:
    train: Labelled
    validation: Labelled
    test: Labelled | None
    origin: str  # how they were made, in words
    notes: tuple[str, ...] = field(default=())

    @property
    def label_names(self) -> list[str]:
        return self.train.label_names

    def sizes(self) -> dict[str, int]:
        return {name: len(part.labels) for name, part in self.parts().items()}

    def parts(self) -> dict[str, Labelled]:
        return {"train": self.train, "validation": self.validation, **({"test": self.test} if self.test is not None else {})}

    def overlap(self) -> dict[str, int]:
        """How many rows of validation and of test also appear in the training split: their scores are optimistic."""
        train = set(_keys(self.train))
        return {name: sum(key in train for key in set(_keys(part))) for name, part in self.parts().items() if name != "train"}

    def digests(self) -> dict[str, str]:
        """A fingerprint of each split's rows and labels: the same data gives the same digest."""
        return {name: _digest(part) for name, part in self.parts().items()}


def make_splits(data, read_source: ReadSource, read_frame: ReadFrame, from_frame: FromFrame, read_dataset_dict: Callable[[str], dict] | None) -> Splits:
    """The sweep's splits from ``data`` (its :class:`~orchestrator.sweep.sweep_sections.DataConfig`). Raises :class:`ConfigError`."""
    if read_dataset_dict is not None and _is_dataset_dict(data.source):
        frames = read_dataset_dict(data.source)
        parts = {name: from_frame(frame, "data.source", f"{data.source}[{name}]", 2 if name == "train" else 1) for name, frame in frames.items()}
        splits, fields = _given(parts, data, "a saved DatasetDict", "data.source"), ("data.source", "data.source")
    elif data.split_column is not None:
        frame = read_frame("data.source", data.source)
        splits = _given(_by_column(frame, data, from_frame), data, f"column {data.split_column!r}", "data.split_column")
        fields = ("data.split_column", "data.split_column")
    elif data.validation is not None:
        parts = {"train": read_source("data.source", data.source, 2), "validation": read_source("data.validation", data.validation, 1)}
        if data.test is not None:
            parts["test"] = read_source("data.test", data.test, 1)
        splits, fields = _given(parts, data, "files", "data.validation"), ("data.validation", "data.test")
    else:
        if data.test is not None:
            raise ConfigError("data.test", data.test, "a test file needs a validation file too; set data.validation (or leave both out to draw them)")
        splits, fields = _drawn(read_source("data.source", data.source, 2), data), ("data.val_size", "data.test_size")
    return _checked(splits, data, *fields)


def _is_dataset_dict(source: str) -> bool:
    return (Path(source).expanduser() / "dataset_dict.json").is_file()


def _by_column(frame: pd.DataFrame, data, from_frame: FromFrame) -> dict[str, Labelled]:
    column = data.split_column
    if column not in frame.columns:
        raise ConfigError("data.split_column", column, f"the data has no such column; its columns are {list(frame.columns)}")
    names = frame[column].astype(str).str.strip().str.lower()
    unknown = sorted(set(names) - set(SPLIT_VALUES))
    if unknown:
        raise ConfigError("data.split_column", column, f"values {unknown[:5]} name no split; use train, validation and test")
    splits = names.map(SPLIT_VALUES)
    return {name: from_frame(frame[splits == name], "data.source", f"{data.source} ({column} = {name})", 2 if name == "train" else 1)
            for name in ("train", "validation", "test") if (splits == name).any()}


def _given(parts: dict[str, Labelled], data, origin: str, field_name: str) -> Splits:
    """Splits the user made: train and validation are required; ``train_size``/``val_size`` still subsample."""
    for name in ("train", "validation"):
        if name not in parts:
            raise ConfigError(field_name, getattr(data, field_name.split(".")[1]), f"it gives no {name} rows; give train and validation rows (test is optional)")
    if data.test_size is not None:
        raise ConfigError("data.test_size", data.test_size, f"the data brings its own splits ({origin}); remove test_size")
    train_names = parts["train"].label_names
    aligned = {name: part if name == "train" else _relabel(part, train_names, name, f"data.{name}" if origin == "files" else field_name)
               for name, part in parts.items()}
    rng = np.random.default_rng(data.split_seed)
    for name, size_field in (("train", "train_size"), ("validation", "val_size")):
        size = getattr(data, size_field)
        if size is not None and size < len(aligned[name].labels):
            aligned[name] = aligned[name].take(np.sort(rng.permutation(len(aligned[name].labels))[:size]))
    return Splits(aligned["train"], aligned["validation"], aligned.get("test"), origin)


def _relabel(part: Labelled, names: list[str], split: str, field_name: str) -> Labelled:
    """Number ``part``'s labels as the training split does; a label training never saw is an error."""
    unknown = sorted(set(part.label_names) - set(names))
    if unknown:
        raise ConfigError(field_name, unknown,
                          f"labels in the {split} split that the training split lacks; a model cannot learn them: add training rows or drop those rows")
    index = np.asarray([names.index(name) for name in part.label_names], dtype=np.int64)
    return replace(part, labels=index[part.labels], label_names=list(names))


def _drawn(rows: Labelled, data) -> Splits:
    """Validation and test drawn from one set of rows with ``split_seed``: train first, then
    validation, then test, so adding a test split leaves a given train_size's rows unchanged."""
    available = len(rows.labels)
    val_size = data.val_size or max(MIN_SCORED_ROWS, available // 5)
    notes = []
    if data.test_size is not None:
        test_size = data.test_size
    elif available >= AUTO_TEST_MIN_ROWS:
        spare = available - val_size - (data.train_size or val_size)
        test_size = min(val_size, max(0, spare))
        if test_size < MIN_SCORED_ROWS:
            test_size = 0
            notes.append(f"no test split: train_size and val_size leave {spare} rows; lower them or give data.test")
    else:
        test_size = 0
        notes.append(f"no test split: {available} rows (a test split is drawn from {AUTO_TEST_MIN_ROWS}); give data.test or set data.test_size")
    _check_sizes(data, available, val_size, test_size)
    train_size = data.train_size or available - val_size - test_size
    order = np.random.default_rng(data.split_seed).permutation(available)
    train = rows.take(order[:train_size])
    validation = rows.take(order[train_size : train_size + val_size])
    test = rows.take(order[train_size + val_size : train_size + val_size + test_size]) if test_size else None
    return Splits(train, validation, test, f"drawn with split_seed {data.split_seed}", tuple(notes))


_MIN_TRAIN_ROWS = 2


def _check_sizes(data, available: int, val_size: int, test_size: int) -> None:
    """The sizes the user gave fit the data's rows, leaving training rows; the error names the
    size that does not fit (the one the user set) and the most it can be."""
    train_size = data.train_size or _MIN_TRAIN_ROWS
    if train_size + val_size + test_size <= available:
        return
    given = {name: size for name, size in (("val_size", data.val_size), ("test_size", data.test_size), ("train_size", data.train_size)) if size}
    sizes = f"train_size {data.train_size or 'left'} + val_size {val_size} + test_size {test_size}"
    if not given:  # automatic sizes from a table too small for them
        raise ConfigError("data.source", data.source, f"{available} usable rows cannot make train, validation and test splits; "
                          f"give at least {_MIN_TRAIN_ROWS + MIN_SCORED_ROWS} rows")
    name = max(given, key=lambda key: given[key])  # the largest size the user set
    most = available - (train_size + val_size + test_size - given[name])
    fix = f"lower {name} to {most} or less" if most >= (MIN_SCORED_ROWS if name != "train_size" else _MIN_TRAIN_ROWS) else \
        f"lower {', '.join(sorted(given))} or give more rows"
    raise ConfigError(f"data.{name}", given[name], f"{sizes} needs {train_size + val_size + test_size} rows "
                      f"(training needs {_MIN_TRAIN_ROWS} or more) but the data has {available} usable rows; {fix}")


def _checked(splits: Splits, data, validation_field: str, test_field: str) -> Splits:
    """Each split can do its job: training sees 2 classes or more, validation and test can score
    a model (rows, and classes for validation); ``*_field`` name what the user set to make them."""
    labelled = len(splits.train.label_names) > 1  # text generation has one "label"
    if labelled and len(set(splits.train.labels.tolist())) < 2:
        raise ConfigError("data.train_size", len(splits.train.labels), "the training split has a single class; use more rows")
    notes = list(splits.notes)
    for name, part, field_name in (("validation", splits.validation, validation_field), ("test", splits.test, test_field)):
        if part is None:
            continue
        key = field_name.removeprefix("data.")
        shown = getattr(data, key) if getattr(data, key) is not None else len(part.labels)
        more = f"set {key} to {MIN_SCORED_ROWS} or more" if key.endswith("_size") else f"give the {name} split more rows"
        if len(part.labels) < MIN_SCORED_ROWS:
            raise ConfigError(field_name, shown, f"the {name} split has {len(part.labels)} rows, and a {name} split of fewer than "
                              f"{MIN_SCORED_ROWS} rows cannot score a model; {more}")
        classes = sorted({splits.label_names[label] for label in part.labels.tolist()}) if labelled else []
        if len(classes) == 1 and name == "validation":
            raise ConfigError(field_name, shown, f"every row of the validation split is of class {classes[0]!r}, so its F1 cannot tell "
                              "configurations apart; give validation rows of 2 classes or more" + (" (a larger val_size)" if key == "val_size" else ""))
        if len(classes) == 1:
            notes.append(f"warning: every row of the test split is of class {classes[0]!r}; its F1 says little: give test rows of more classes")
    shared = splits.overlap()
    notes.extend(f"warning: {shared[name]} {name} row(s) also appear in the training split; the {name} scores are optimistic"
                 for name in ("validation", "test") if shared.get(name))
    return replace(splits, notes=tuple(notes))


def _keys(part: Labelled) -> list[str]:
    """What identifies a row: its text, or its image file."""
    return [str(item).strip().lower() for item in (part.texts if hasattr(part, "texts") else part.paths)]


def _digest(part: Labelled) -> str:
    digest = hashlib.sha256()
    for key in _keys(part):
        digest.update(key.encode())
        digest.update(b"\0")
    digest.update(np.asarray(part.labels, dtype=np.int64).tobytes())
    digest.update("\0".join(part.label_names).encode())
    return digest.hexdigest()[:16]
