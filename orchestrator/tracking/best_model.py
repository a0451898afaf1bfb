"""The study's best model, logged to MLflow as a ``transformers`` model and registered.

Trials keep the trained parameters of their best epoch (``trials.trial_files.BEST_MODEL_FILE``);
the recorder keeps that file only for the trial that beat the study's best. After the
invocation, the model is rebuilt from the pre-trained weights plus those parameters, logged on
the trial's MLflow run, and registered as a new version of the invocation's parent run (whose
page then lists it): never overwriting an earlier one. A LoRA trial's adapters are merged into
the weights first. Every built-in task registers its model as the ``transformers`` pipeline it
serves (``trials.task_specs.TaskSpec.pipeline``), reading its inputs as the sweep measured it:
:class:`Inference`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.progress.quiet_transformers import quiet_transformers
from orchestrator.tracking import mlflow_tags
from trials.task_specs import TEXT_CLASSIFICATION

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


@dataclass(frozen=True)
class Inference:
    """How the registered model reads its inputs: as the sweep's trials and test scoring read them.

    Text classification truncates each text at ``max_length`` tokens (``data.max_length``), as the
    sweep tokenised it. Text generation is greedy, at most ``max_new_tokens`` new tokens, from the
    prompt's last :func:`trials.text_generation.prompt_limit` tokens, as the sweep's generation
    scores were measured. Images are resized by their processor whatever their size.
    """

    max_length: int = 128
    max_new_tokens: int = 32

    def tokenizer_settings(self, serving: str) -> dict:
        """The tokenizer's saved ``model_max_length`` and ``truncation_side``: what ``truncation=True`` cuts to."""
        from trials.text_generation import prompt_limit

        if serving == "text-generation":
            return {"model_max_length": prompt_limit(self.max_length, self.max_new_tokens), "truncation_side": "left"}
        return {"model_max_length": self.max_length, "truncation_side": "right"}

    def call_settings(self, serving: str) -> dict:
        """The pipeline call's settings: saved as the model's ``model_config``, which ``mlflow.pyfunc``
        (and so ``mlflow models serve``) applies to every prediction."""
        if serving == "text-classification":
            return {"truncation": True, "max_length": self.max_length, "padding": True}
        if serving == "text-generation":
            # return_full_text: answer with the generated text alone, as the metrics scored it
            return {"truncation": True, "do_sample": False, "num_beams": 1, "max_new_tokens": self.max_new_tokens, "return_full_text": False}
        return {}

    def usage(self, serving: str) -> str:
        """How to call the pipeline that ``mlflow.transformers.load_model`` returns, in words."""
        if serving == "text-classification":
            return (f"mlflow.pyfunc.load_model and mlflow models serve truncate each text at {self.max_length} tokens as the sweep did; "
                    "call the pipeline of mlflow.transformers.load_model with truncation=True (its tokenizer's model_max_length "
                    f"is {self.max_length})")
        if serving == "text-generation":
            limit = self.tokenizer_settings(serving)["model_max_length"]
            return (f"greedy, at most {self.max_new_tokens} new tokens (the saved generation config), from the prompt's last {limit} "
                    "tokens: mlflow.pyfunc.load_model and mlflow models serve do so; call the pipeline of "
                    "mlflow.transformers.load_model with truncation=True")
        return "images of any size: the saved image processor resizes them as the sweep did"


def register_best_model(kept: KeptModel, model_path: str, *, label_names: list[str], tracking_uri: str, registered_name: str,
                        tags: dict[str, str], task: TaskName = TEXT_CLASSIFICATION, pad_token_id: int = 0,
                        inference: Inference | None = None, parent_run_id: str | None = None, description: str = "") -> str:
    """Log the kept model on its trial's run and register it under ``registered_name`` as a version
    of ``parent_run_id`` (default: the trial's run); return the new version."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from transformers.utils import logging as transformers_logging

    from trials import checkpoint
    from trials.finetune import TrialSettings
    from trials.hyperparameters import HYPERPARAMETER_NAMES, Hyperparameters
    from trials.lora import merged
    from trials.task_specs import TASK_SPECS
    from trials.tasks import task_for

    transformers_logging.disable_progress_bar()
    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)  # e.g. "Unable to find license information"

    inference = inference or Inference()
    hyperparameters = Hyperparameters.from_mapping({k: v for k, v in kept.params.items() if k in HYPERPARAMETER_NAMES})
    settings = TrialSettings(model_path, label_names, pad_token_id, max_epochs=1, objective="", mode="max", task=task)
    with quiet_transformers():
        model = task_for(settings).load_model(hyperparameters)
    checkpoint.apply_weights(model, checkpoint.best_model_weights(kept.weights_file.parent))
    model = merged(model).eval()  # LoRA adapters folded into the weights: it loads like a full fine-tune
    serving = TASK_SPECS[task].pipeline
    served = _pipeline(serving, model, model_path, inference)
    mlflow.set_tracking_uri(tracking_uri)
    # MLflow prints run URLs to stdout, which belongs to `hpo run --json`, and "Successfully registered ..." to stderr: our note says it.
    with contextlib.redirect_stdout(sys.stderr), contextlib.redirect_stderr(io.StringIO()), mlflow.start_run(run_id=kept.run_id):
        info = mlflow.transformers.log_model(
            served, name="model", task=serving, input_example=INPUT_EXAMPLES.get(serving), model_config=inference.call_settings(serving) or None,
            pip_requirements=_requirements(),
        )
    client = MlflowClient(tracking_uri)
    try:
        client.create_registered_model(registered_name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    all_tags = {**tags, mlflow_tags.VALUE: f"{kept.value:.6g}", mlflow_tags.INFERENCE: inference.usage(serving)}
    with contextlib.redirect_stdout(sys.stderr), contextlib.redirect_stderr(io.StringIO()):
        version = client.create_model_version(registered_name, f"models:/{info.model_id}", run_id=parent_run_id or kept.run_id,
                                              tags=all_tags, description=description or None, model_id=info.model_id, await_creation_for=60)
    return str(version.version)


def _pipeline(serving: str, model, model_path: str, inference: Inference):
    """The ``transformers`` pipeline ``serving`` of ``model``, with the tokenizer or image processor saved
    beside ``model_path``, set to read inputs as the sweep did (``inference``)."""
    from transformers import AutoImageProcessor, AutoTokenizer, pipeline

    if serving == "image-classification":
        return pipeline("image-classification", model=model, image_processor=AutoImageProcessor.from_pretrained(model_path), device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_path, **inference.tokenizer_settings(serving))  # init settings: saved with it
    if serving == "text-generation":
        _greedy(model, tokenizer, inference.max_new_tokens)
    # transformers types pipeline() as one overload per literal task name (none takes a str variable), and
    # AutoTokenizer's return type is not among the tokenizer types those overloads accept.
    return pipeline(serving, model=model, tokenizer=tokenizer, device="cpu")  # type: ignore[call-overload]


def _greedy(model, tokenizer, max_new_tokens: int) -> None:
    """Save the generation settings the sweep's generation scores used: greedy, at most ``max_new_tokens``."""
    generation = model.generation_config
    if generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if generation.eos_token_id is None and tokenizer.eos_token_id is not None:
        generation.eos_token_id = tokenizer.eos_token_id
    generation.do_sample = False
    generation.num_beams = 1
    generation.max_new_tokens = max_new_tokens
    for sampling in ("temperature", "top_p", "top_k"):  # meaningless when greedy; transformers warns when they are set
        setattr(generation, sampling, None)


def _requirements() -> list[str]:
    """What serving the model needs. Given explicitly: MLflow's default list adds torchvision to
    every torch model (an import error where it is absent) and infers the rest in a slow subprocess."""
    import torch
    import transformers

    return [f"transformers=={transformers.__version__}", f"torch=={torch.__version__.split('+')[0]}"]
