"""The sweep's splits as MLflow dataset inputs: what each run was trained and scored on.

Each split is described, never copied: its name, where it came from, its digest
(:meth:`~orchestrator.data.splits.Splits.digests`), its rows and labels, and its columns. The parent
run gets every split (it records the chosen configuration's test score); each trial's run gets
train and validation only, as no trial ever sees the test split.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from orchestrator.secrets import mask
from trials.task_specs import IMAGE_CLASSIFICATION, TEXT_GENERATION

TRIAL_SPLITS = ("train", "validation")
"""The splits a trial is trained and scored on: its run's inputs."""


def dataset_inputs(prepared) -> dict[str, DatasetInput]:
    """One dataset input per split of ``prepared`` (a :class:`~orchestrator.data.prepare.PreparedSweep`),
    by split name; none for a sweep with its own training function (it reads its own data)."""
    splits = prepared.splits
    if splits is None:
        return {}
    config = prepared.config
    data = config.data
    schema = _schema(config)
    digests = splits.digests()
    inputs = {}
    for name, part in splits.parts().items():
        # Separate files: each split has its own; otherwise every split comes from data.source.
        location = getattr(data, name) if splits.origin == "files" and name != "train" else data.source
        source = {"uri": mask(str(location)), "split": name, "split_by": mask(splits.origin)}
        profile = {"num_rows": len(part.labels), "num_labels": len(splits.label_names)}
        dataset = Dataset(
            name=f"{config.name} {name}", digest=digests[name], source_type="local", source=json.dumps(source),
            schema=schema, profile=json.dumps(profile),
        )
        inputs[name] = DatasetInput(dataset, tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=name)])
    return inputs


def _schema(config) -> str | None:
    """The columns a sweep reads, in MLflow's column-spec form (the UI shows it); None for a folder of images."""
    from orchestrator.data.prepare import _columns

    names: Iterable[str]
    if config.task == IMAGE_CLASSIFICATION:
        if Path(config.data.source).expanduser().is_dir():
            return None  # one subfolder of images per class: no columns
        names = _columns(config, "image_column", "label_column").values()
    elif config.task == TEXT_GENERATION:
        data = config.data
        names = [data.messages_column] if data.messages_column else [data.prompt_column or "prompt", data.response_column or "response"]
    else:
        names = _columns(config, "text_column", "label_column").values()
    return json.dumps({"mlflow_colspec": [{"type": "string", "name": name, "required": True} for name in names]})


def log_dataset_inputs(tracker, run_id: str, inputs: Iterable[DatasetInput], where: str) -> list[str]:
    """Log ``inputs`` on run ``run_id``; return notes for the user. A failure here is reported,
    never fatal: the inputs describe the runs, the study does not need them."""
    inputs = list(inputs)
    if not inputs:
        return []
    try:
        tracker.log_inputs(run_id, inputs)
    except Exception as error:  # noqa: BLE001 - a courtesy, like the summary plots
        return [mask(f"dataset inputs not logged on {where}: {type(error).__name__}: {error}")]
    return []
