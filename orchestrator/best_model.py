"""The study's best model, logged to MLflow as a ``transformers`` model and registered.

Trials keep the trained parameters of their best epoch (``trials.checkpoint.BEST_MODEL_FILE``);
the recorder keeps that file only for the trial that beat the study's best. After the
invocation, the model is rebuilt from the pre-trained weights plus those parameters, logged on
the trial's MLflow run, and registered as a new version: never overwriting an earlier one.
A LoRA trial's adapters are merged into the weights first. Every built-in task registers its
model as the ``transformers`` pipeline it serves (``trials.task_specs.TaskSpec.pipeline``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.mlflow_tags import TAG_PREFIX

if TYPE_CHECKING:
    from trials.task_specs import TaskName

INPUT_EXAMPLE = ["what a great day", "this is the worst service ever"]
INPUT_EXAMPLES = {"text-classification": INPUT_EXAMPLE, "text-generation": ["Write a short greeting."]}
"""What MLflow shows as each pipeline's example input (and infers its signature from); none for images."""


@dataclass(frozen=True)
class KeptModel:
    """The trained parameters of the trial that beat the study's best in this invocation."""

    weights_file: Path
    trial_number: int
    run_id: str
    value: float
    params: dict
    trial_path: str | None = None  # the Ray trial folder holding the file: freed with it


def register_best_model(kept: KeptModel, model_path: str, label_names: list[str], tracking_uri: str,
                        registered_name: str, tags: dict[str, str], task: TaskName = "text-classification", pad_token_id: int = 0) -> str:
    """Log the kept model on its trial's run and register it under ``registered_name``; return the new version."""
    import mlflow
    from mlflow import MlflowClient
    from transformers.utils import logging as transformers_logging

    from trials import checkpoint
    from trials.finetune import TrialSettings
    from trials.hyperparameters import HYPERPARAMETER_NAMES, Hyperparameters
    from trials.lora import merged
    from trials.task_specs import TASK_SPECS
    from trials.tasks import task_for

    transformers_logging.disable_progress_bar()
    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)  # e.g. "Unable to find license information"

    hyperparameters = Hyperparameters.from_mapping({k: v for k, v in kept.params.items() if k in HYPERPARAMETER_NAMES})
    settings = TrialSettings(model_path, label_names, pad_token_id, max_epochs=1, objective="", mode="max", task=task)
    model = task_for(settings).load_model(hyperparameters)
    checkpoint.apply_weights(model, checkpoint.best_model_weights(kept.weights_file.parent))
    model = merged(model).eval()  # LoRA adapters folded into the weights: it loads like a full fine-tune
    serving = TASK_SPECS[task].pipeline
    served = _pipeline(serving, model, model_path)
    mlflow.set_tracking_uri(tracking_uri)
    # MLflow prints run URLs to stdout, which belongs to `hpo run --json`, and "Successfully registered ..." to stderr: our note says it.
    with contextlib.redirect_stdout(sys.stderr), contextlib.redirect_stderr(io.StringIO()), mlflow.start_run(run_id=kept.run_id):
        info = mlflow.transformers.log_model(
            served, name="model", task=serving, input_example=INPUT_EXAMPLES.get(serving),
            registered_model_name=registered_name, await_registration_for=60, pip_requirements=_requirements(),
        )
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri)
    for key, value in {**tags, f"{TAG_PREFIX}optuna_trial_number": str(kept.trial_number), f"{TAG_PREFIX}value": f"{kept.value:.6g}"}.items():
        client.set_model_version_tag(registered_name, version, key, value)
    return version


def _pipeline(serving: str, model, model_path: str):
    """The ``transformers`` pipeline ``serving`` of ``model``, with the tokenizer or image processor saved beside ``model_path``."""
    from transformers import AutoImageProcessor, AutoTokenizer, pipeline

    if serving == "image-classification":
        return pipeline("image-classification", model=model, image_processor=AutoImageProcessor.from_pretrained(model_path), device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if serving == "text-generation" and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # transformers types pipeline() as one overload per literal task name (none takes a str variable), and
    # AutoTokenizer's return type is not among the tokenizer types those overloads accept.
    return pipeline(serving, model=model, tokenizer=tokenizer, device="cpu")  # type: ignore[call-overload]


def _requirements() -> list[str]:
    """What serving the model needs. Given explicitly: MLflow's default list adds torchvision to
    every torch model (an import error where it is absent) and infers the rest in a slow subprocess."""
    import torch
    import transformers

    return [f"transformers=={transformers.__version__}", f"torch=={torch.__version__.split('+')[0]}"]
