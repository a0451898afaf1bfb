"""Labelled images: finding them (a folder per class, or a table of paths), preprocessing them
once with the model's image processor, and a trial's batches and augmentation.

A sweep preprocesses its images once (:func:`preprocess`): each is resized and cropped the way
the model expects and kept as uint8 pixels (a quarter of float32's size), and the arrays travel
to every trial through the Ray object store. Trials only augment, normalise and batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trials.data import DataError, MissingColumn

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class LabelledImages:
    paths: list[Path]
    labels: np.ndarray  # int64 class ids
    label_names: list[str]

    def take(self, rows: np.ndarray) -> LabelledImages:
        return LabelledImages([self.paths[i] for i in rows], self.labels[rows], self.label_names)


@dataclass(frozen=True)
class ImageSplit:
    """Preprocessed images as uint8 pixels, and how the model wants them normalised."""

    pixels: np.ndarray  # uint8 (n, channels, height, width)
    labels: np.ndarray  # int64
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> ImageSplit:
        return replace(self, pixels=self.pixels[rows], labels=self.labels[rows])


def images_in_folder(folder: Path, min_classes: int = 2) -> LabelledImages:
    """Images laid out one folder per class (``folder/cat/001.png``); the folder names are the labels."""
    classes = sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not classes:
        raise DataError("data.source", f"no class folders in {folder}; lay the images out as {folder.name}/LABEL/IMAGE.png")
    paths: list[Path] = []
    labels: list[int] = []
    for index, class_folder in enumerate(classes):
        found = sorted(path for path in class_folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
        if not found:
            raise DataError("data.source", f"class folder {class_folder.name!r} holds no images ({', '.join(IMAGE_SUFFIXES)}); add some or remove it")
        paths += found
        labels += [index] * len(found)
    if len(classes) < min_classes:
        raise DataError("data.source", f"only one class folder ({classes[0].name!r}); classification needs at least 2")
    return LabelledImages(paths, np.asarray(labels, dtype=np.int64), [path.name for path in classes])


def images_in_table(frame: pd.DataFrame, image_column: str, label_column: str, base_dir: Path, min_classes: int = 2) -> LabelledImages:
    """Image paths and labels from two columns of a table; relative paths start at ``base_dir``."""
    for field, column in (("data.image_column", image_column), ("data.label_column", label_column)):
        if column not in frame.columns:
            raise MissingColumn(field, column, frame.columns)
    frame = frame[[image_column, label_column]].dropna()
    if frame.empty:
        raise DataError("data.source", "no rows with both an image path and a label")
    paths = [base_dir / str(path) for path in frame[image_column]]
    missing = next((path for path in paths if not path.is_file()), None)
    if missing is not None:
        raise DataError("data.image_column", f"image {missing} does not exist; relative paths are read from {base_dir}")
    label_names = sorted(frame[label_column].astype(str).unique())
    if len(label_names) < min_classes:
        raise DataError("data.label_column", f"only one class ({label_names[0]!r}); classification needs at least 2")
    index = {name: i for i, name in enumerate(label_names)}
    return LabelledImages(paths, frame[label_column].astype(str).map(index).to_numpy(dtype=np.int64), label_names)


def preprocess(processor, images: LabelledImages, num_channels: int = 3, chunk: int = 256) -> ImageSplit:
    """Resize and crop every image as ``processor`` (the model's ``AutoImageProcessor``) does,
    keeping uint8 pixels; normalisation is left to :func:`collate`."""
    mode = "L" if num_channels == 1 else "RGB"
    parts = []
    for start in range(0, len(images.paths), chunk):
        pictures = [_open(path, mode) for path in images.paths[start : start + chunk]]
        pixels = processor(pictures, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"]
        parts.append(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    rescale = getattr(processor, "do_rescale", True)
    normalize = getattr(processor, "do_normalize", True)
    return ImageSplit(
        pixels=np.concatenate(parts),
        labels=images.labels,
        scale=float(processor.rescale_factor) if rescale else 1.0,
        mean=tuple(float(v) for v in np.atleast_1d(processor.image_mean)) if normalize else (0.0,),
        std=tuple(float(v) for v in np.atleast_1d(processor.image_std)) if normalize else (1.0,),
    )


def _open(path: Path, mode: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (UnidentifiedImageError, OSError) as error:
        raise DataError("data.source", f"{path} is not a readable image ({type(error).__name__}); remove or replace it") from None


def collate(split: ImageSplit, rows: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """The images at ``rows`` as normalised ``pixel_values``; ``transform`` (training
    augmentation) may change each image's uint8 pixels first."""
    pixels = split.pixels[rows]
    if transform is not None:
        pixels = np.stack([transform(image) for image in pixels])
    values = torch.from_numpy(np.ascontiguousarray(pixels)).float() * split.scale
    mean = torch.tensor(split.mean).view(1, -1, 1, 1)
    std = torch.tensor(split.std).view(1, -1, 1, 1)
    return {"pixel_values": (values - mean) / std, "labels": torch.from_numpy(split.labels[rows])}


def flip_and_crop(image: np.ndarray, prob: float, kinds: str, rng: np.random.Generator) -> np.ndarray:
    """Training augmentation of one (channels, height, width) image: with probability ``prob``
    each, a horizontal flip and a random crop (``kinds``: ``flip``, ``crop`` or ``flip_crop``)."""
    wanted = kinds.split("_")
    if "flip" in wanted and rng.random() < prob:
        image = image[:, :, ::-1]
    if "crop" in wanted and rng.random() < prob:
        image = _shifted_crop(image, rng)
    return image


def _shifted_crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pad by an eighth of each side (mirroring the edge) and crop the original size at a random offset."""
    _, height, width = image.shape
    pad_h, pad_w = max(1, height // 8), max(1, width // 8)
    padded = np.pad(image, ((0, 0), (pad_h, pad_h), (pad_w, pad_w)), mode="reflect")
    top, left = int(rng.integers(2 * pad_h + 1)), int(rng.integers(2 * pad_w + 1))
    return padded[:, top : top + height, left : left + width]


def shuffled_batches(count: int, batch_size: int, rng: np.random.Generator, rows: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Row indices of shuffled training batches over all ``count`` rows (or over ``rows``)."""
    order = rng.permutation(count) if rows is None else rng.permutation(rows)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def ordered_batches(count: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, count, batch_size):
        yield np.arange(start, min(start + batch_size, count))
