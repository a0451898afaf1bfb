"""Labelled text: loading, splitting, tokenising once, and length-bucketed batches.

A sweep tokenises its data once (:func:`encode`) and ships the resulting
:class:`EncodedSplit` arrays to every trial through the Ray object store; trials only pad
and batch. Batches are padded to their longest member (dynamic padding) and training
batches group texts of similar length (length bucketing), so short tweets do not pay for
``max_length``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch


class DataError(ValueError):
    """The data cannot be used as given. ``field`` names the setting at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class MissingColumn(DataError):
    """The table has no column ``column``, which the setting ``field`` names."""

    def __init__(self, field: str, column: str, columns: Sequence[object], also: str = "") -> None:
        self.column = column
        self.columns = [str(name) for name in columns]
        super().__init__(field, f"column {column!r} is not in the data; its columns are {self.columns}{also}")


@dataclass(frozen=True)
class LabelledTexts:
    texts: list[str]
    labels: np.ndarray  # int64 class ids
    label_names: list[str]

    def take(self, rows: np.ndarray) -> LabelledTexts:
        return LabelledTexts([self.texts[i] for i in rows], self.labels[rows], self.label_names)


@dataclass(frozen=True)
class EncodedSplit:
    """Token ids of many texts, stored flat: text ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray  # int32
    offsets: np.ndarray  # int64, len = n + 1
    labels: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> EncodedSplit:
        return EncodedSplit(*ragged_take(self.ids, self.offsets, rows), self.labels[rows])


def ragged_take(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``rows`` of a ragged array stored flat (row ``i`` is ``values[offsets[i]:offsets[i + 1]]``),
    stored flat the same way: (values, offsets)."""
    parts = [values[offsets[row] : offsets[row + 1]] for row in rows]
    taken = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(part) for part in parts], out=taken[1:])
    return (np.concatenate(parts) if parts else values[:0]), taken


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV, TSV, JSON Lines or Parquet file into a DataFrame."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    if suffix == ".json":
        return pd.read_json(path)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    separator = "\t" if suffix == ".tsv" else ","
    return pd.read_csv(path, sep=separator, encoding_errors="replace")


def labelled_texts(frame: pd.DataFrame, text_column: str, label_column: str, min_classes: int = 2) -> LabelledTexts:
    """Pick the text and label columns, drop rows where either is missing, and number the labels
    (a training set needs ``min_classes`` 2; a validation or test set may hold one class)."""
    for field, column in (("data.text_column", text_column), ("data.label_column", label_column)):
        if column not in frame.columns:
            raise MissingColumn(field, column, frame.columns)
    frame = frame[[text_column, label_column]].dropna()
    frame = frame[frame[text_column].astype(str).str.strip() != ""]
    if frame.empty:
        raise DataError("data.source", "no rows with both a text and a label")
    label_names = sorted(frame[label_column].astype(str).unique())
    if len(label_names) < min_classes:
        raise DataError("data.label_column", f"only one class ({label_names[0]!r}); classification needs at least 2")
    index = {name: i for i, name in enumerate(label_names)}
    labels = frame[label_column].astype(str).map(index).to_numpy(dtype=np.int64)
    return LabelledTexts(frame[text_column].astype(str).tolist(), labels, label_names)


def split(data, train_size: int, val_size: int, seed: int):
    """Shuffle with ``seed`` and take disjoint train and validation subsets of the given sizes
    (of :class:`LabelledTexts`, or anything with ``labels`` and ``take(rows)``)."""
    if train_size + val_size > len(data.labels):
        raise DataError(
            "data.train_size",
            f"train_size + val_size = {train_size + val_size} but the data has {len(data.labels)} usable rows",
        )
    order = np.random.default_rng(seed).permutation(len(data.labels))
    return data.take(order[:train_size]), data.take(order[train_size : train_size + val_size])


def encode(tokenizer, texts: Sequence[str], labels: np.ndarray, max_length: int) -> EncodedSplit:
    """Tokenise ``texts`` (with special tokens, truncated to ``max_length``) into an :class:`EncodedSplit`."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((token for ids in encoded for token in ids), dtype=np.int32, count=int(offsets[-1]))
    return EncodedSplit(flat, offsets, np.asarray(labels, dtype=np.int64))


def collate(split_: EncodedSplit, rows: np.ndarray, pad_id: int, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """Pad the texts at ``rows`` to the longest among them; ``transform`` (training
    augmentation) may change each text's token ids first."""
    texts = [split_.ids[split_.offsets[row] : split_.offsets[row + 1]] for row in rows]
    if transform is not None:
        texts = [transform(ids) for ids in texts]
    lengths = [len(ids) for ids in texts]
    input_ids = np.full((len(rows), max(lengths)), pad_id, dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    for position, (ids, length) in enumerate(zip(texts, lengths, strict=True)):
        input_ids[position, :length] = ids
        attention_mask[position, :length] = 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "labels": torch.from_numpy(split_.labels[rows]),
    }


def stratified_rows(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """``size`` row indices (sorted) that keep each class's share of ``labels``; every class present
    keeps at least one row. The same labels, size and seed always give the same rows."""
    if size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.maximum(1, np.floor(counts * size / len(labels)).astype(np.int64))
    by_remainder = np.argsort(-(counts * size / len(labels) - quotas), kind="stable")
    for index in by_remainder[: max(0, size - int(quotas.sum()))]:
        quotas[index] += 1
    chosen = [rng.choice(np.flatnonzero(labels == label), size=min(quota, count), replace=False)
              for label, quota, count in zip(classes, quotas, counts, strict=True)]
    return np.sort(np.concatenate(chosen))


def balanced_rows(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """As many row indices as there are rows, drawn so that every class is equally likely (oversampling)."""
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return rng.choice(len(labels), size=len(labels), replace=True, p=weights / weights.sum())


def train_batches(split_: EncodedSplit, batch_size: int, rng: np.random.Generator, bucket_batches: int = 50, rows: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Row indices of shuffled training batches whose texts have similar lengths.

    Rows (all, or ``rows``) are shuffled, cut into pools of ``bucket_batches`` batches, sorted
    by length inside each pool and cut into batches; the batch order is shuffled again.
    """
    order = rng.permutation(len(split_)) if rows is None else rng.permutation(rows)
    lengths = split_.lengths
    pool = batch_size * bucket_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    for index in rng.permutation(len(batches)):
        yield batches[index]


class HasLengths(Protocol):
    """A split of variable-length rows (EncodedSplit, HiddenStates, GenerationSplit)."""

    @property
    def lengths(self) -> np.ndarray: ...


def eval_batches(split_: HasLengths, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices of evaluation batches, sorted by length so padding is minimal."""
    order = np.argsort(split_.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
