"""``hpo evaluate``: score a study's registered model (or any MLflow model) on a labelled file, later.

After a sweep, the model it registered is what gets deployed; a new month's data asks whether it
still holds up. This reads the study (which model: the answer's ``registered`` version, which
trial it came from, the sweep's columns and ``data.max_length``), loads the model from the MLflow
registry as a ``transformers`` text-classification pipeline, classifies the file's texts in
batches and compares the predictions with the file's labels.

It writes nothing: the study database is opened for reading only, and MLflow is only read (the
model's files are downloaded into a temporary folder, removed afterwards). Text classification
only for now: that is what ``registered_model:`` registers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from orchestrator.errors import ConfigError
from orchestrator.secrets import mask
from orchestrator.sweep import default_stores
from trials.task_specs import TASK_SPECS, TEXT_CLASSIFICATION

METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
METRIC_LABELS = {"accuracy": "accuracy", "precision_macro": "precision (macro)", "recall_macro": "recall (macro)", "f1_macro": "F1 (macro)"}
ONLY_TEXT = "hpo evaluate scores text-classification models only for now"


@dataclass
class Evaluation:
    """What was measured (which model, on which file) and the scores."""

    study: str
    model_uri: str
    model_name: str | None  # registered model NAME and version, when the model is one
    model_version: str | None
    trial: int | None  # the study's trial the model's configuration comes from, when known
    data: str
    text_column: str
    label_column: str
    rows: int  # rows scored
    dropped: int  # rows without a text or a label
    metrics: dict[str, float]  # accuracy, precision_macro, recall_macro, f1_macro
    per_class: dict[str, dict]  # label -> {"f1": float | None, "rows": int, "predicted": int}
    labels: list[str]  # the model's labels, in its class-id order
    confusion: list[list[int]]  # rows: true label, columns: predicted label (``labels`` order)
    max_length: int
    batch_size: int
    device: str
    study_test: dict | None = None  # the sweep's own test score of this model: metrics, per_class_f1, rows
    notes: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return f"{self.model_name} v{self.model_version}" if self.model_name else self.model_uri

    @property
    def title(self) -> str:
        origin = f"study {self.study}" + (f", trial {self.trial}" if self.trial is not None else "")
        return f"model {self.model} ({origin}) on {self.data} ({self.rows} rows)"

    def to_dict(self) -> dict:
        return {"measured": self.title, **asdict(self)}


def evaluate_file(db: str, study_name: str, data: Path, *, mlflow_uri: str = default_stores.MLFLOW, model_uri: str | None = None,
                  text_column: str | None = None, label_column: str | None = None, batch_size: int = 32,
                  max_length: int | None = None, device: str = "cpu") -> Evaluation:
    """Score the study's registered model (or ``model_uri``) on the labelled file ``data``."""
    from orchestrator.answer.settle import stored_answer
    from orchestrator.reports import queries

    path = Path(data)
    if not path.is_file():
        raise ConfigError("--data", str(data), "no such file; give a CSV, TSV, JSON Lines or Parquet file with a text and a label column")
    _check_device(device)
    study = queries.load_study(queries.open_for_reading(db), study_name)
    sweep = recorded_sweep(db, study_name) or {}
    sweep_data = sweep.get("data") or {}
    answer = stored_answer(study)
    registered = answer.registered if answer is not None else None
    if model_uri is None:
        task = sweep.get("task")
        function = (sweep.get("trial") or {}).get("function")
        if function or (task and task != TEXT_CLASSIFICATION):
            if function:
                raise ConfigError("STUDY", study_name, f"no registered model: its trials run trial.function {function}; "
                                                       f"{ONLY_TEXT} (pass --model-uri for one)")
            raise ConfigError("STUDY", study_name, f"its task is {task}; {ONLY_TEXT}: load its registered model "
                                                   "with mlflow.transformers.load_model('models:/NAME/VERSION') instead")
        if registered is None:
            raise ConfigError("STUDY", study_name, "the study has no registered model: set registered_model: NAME in the sweep file "
                                                   "and run it, or pass --model-uri")
        model_uri = f"models:/{registered}"
    is_registered = registered is not None and model_uri.rstrip("/") == f"models:/{registered}"
    name, version = _registered_name(model_uri)

    text_column = text_column or sweep_data.get("text_column") or "text"
    label_column = label_column or sweep_data.get("label_column") or "label"
    texts, labels, dropped = read_labelled(path, text_column, label_column)

    if model_uri.startswith(("models:", "runs:")):
        _check_tracking(mlflow_uri, sweep)
    with tempfile.TemporaryDirectory(prefix="hpo-evaluate-") as folder:
        classifier = load_classifier(model_uri, mlflow_uri, device, Path(folder), sweep)
        model_labels = [str(classifier.model.config.id2label[i]) for i in range(classifier.model.config.num_labels)]
        unknown = sorted(set(labels) - set(model_labels))
        if unknown:
            shown = ", ".join(repr(label) for label in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise ConfigError("--data", str(data), f"label{'s' * (len(unknown) > 1)} {shown} not known to the model (it predicts "
                                                   f"{', '.join(model_labels)}); drop those rows or map them to the model's labels")
        limit = max_length or sweep_data.get("max_length") or _model_limit(classifier)
        predicted = predict(classifier, texts, batch_size, limit)

    index = {label: i for i, label in enumerate(model_labels)}
    truth = np.array([index[label] for label in labels], dtype=np.int64)
    guesses = np.array([index[label] for label in predicted], dtype=np.int64)
    metrics, per_class, confusion, notes = score(truth, guesses, model_labels)
    study_test = None
    if is_registered and answer is not None and answer.test is not None:
        earlier = {key.removeprefix("test_"): value for key, value in answer.test["metrics"].items()}
        study_test = {"metrics": {metric: earlier[metric] for metric in METRICS if metric in earlier},
                      "per_class_f1": {label: earlier.get(_per_class_key(label)) for label in model_labels}, "rows": answer.test["rows"]}
    return Evaluation(
        study=study_name, model_uri=model_uri, model_name=name, model_version=version,
        trial=answer.trial if is_registered and answer is not None else None, data=str(data), text_column=text_column, label_column=label_column,
        rows=len(labels), dropped=dropped, metrics=metrics, per_class=per_class, labels=model_labels, confusion=confusion,
        max_length=int(limit), batch_size=batch_size, device=device, study_test=study_test, notes=notes,
    )


def recorded_sweep(db: str, study_name: str) -> dict | None:
    """The sweep file the study last ran with (see :func:`orchestrator.reports.queries.recorded_sweep`)."""
    import sqlalchemy

    from orchestrator.reports import queries

    engine = sqlalchemy.create_engine(db, poolclass=sqlalchemy.pool.NullPool)
    try:
        return queries.recorded_sweep(engine, study_name)
    finally:
        engine.dispose()


def read_labelled(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str], int]:
    """(texts, labels as text, rows dropped) of the file; rows without a text or a label are dropped, as the sweep does."""
    from trials.data import DataError, labelled_texts, read_table

    try:
        frame = read_table(path)
    except (ValueError, OSError, ImportError) as error:  # pandas and pyarrow parse errors are ValueErrors
        reason = " ".join(str(error).split())[:200]
        raise ConfigError("--data", str(path), f"cannot read it ({type(error).__name__}: {reason}); give a CSV, TSV, JSON Lines or Parquet file") from None
    try:
        data = labelled_texts(frame, text_column, label_column, min_classes=1)
    except DataError as error:
        option = {"data.text_column": "--text-column", "data.label_column": "--label-column"}.get(error.field, "--data")
        value = {"--text-column": text_column, "--label-column": label_column}.get(option, str(path))
        raise ConfigError(option, value, str(error)) from None
    labels = [data.label_names[i] for i in data.labels]
    return data.texts, labels, len(frame) - len(labels)


def _per_class_key(label: str) -> str:
    """The name the sweep gave ``label``'s F1 among its metrics (``f1_class.<label>``, MLflow-safe)."""
    from trials.metrics import per_class_f1

    return next(iter(per_class_f1(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), [label]))).removeprefix("val_")


def _registered_name(model_uri: str) -> tuple[str | None, str | None]:
    """(NAME, VERSION) of a ``models:/NAME/VERSION`` URI; (None, None) for any other URI."""
    if not model_uri.startswith("models:/"):
        return None, None
    name, _, version = model_uri.removeprefix("models:/").rstrip("/").rpartition("/")
    return (name, version) if name and version.isdigit() else (None, None)


def _check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError("--device", device, "use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", device, "no CUDA GPU is visible here; use --device cpu")


def _sweep_mlflow_hint(sweep: dict, mlflow_uri: str) -> str:
    recorded = (sweep.get("storage") or {}).get("mlflow")
    return f" (the sweep used storage.mlflow {mask(recorded)})" if recorded and recorded != mlflow_uri else ""


def _check_tracking(mlflow_uri: str, sweep: dict) -> None:
    """A SQLite tracking store must exist: MLflow would create an empty one, and this command writes nothing."""
    from orchestrator.storage.study import sqlite_file

    if mlflow_uri.startswith(("http://", "https://", "databricks", "file:")):
        return
    try:
        database = sqlite_file(mlflow_uri)
    except Exception:  # noqa: BLE001 - not a database URL: MLflow says what it makes of it
        return
    if database is not None and not database.is_file():
        raise ConfigError("--mlflow", mlflow_uri, "no MLflow database there; pass the sweep's storage.mlflow" + _sweep_mlflow_hint(sweep, mlflow_uri))


def load_classifier(model_uri: str, mlflow_uri: str, device: str, folder: Path, sweep: dict | None = None):
    """The MLflow ``transformers`` model at ``model_uri`` as a text-classification pipeline on ``device``."""
    import mlflow
    import torch
    from mlflow.exceptions import MlflowException
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quieter = logging.getLogger("mlflow.transformers")
    if quieter.getEffectiveLevel() < logging.ERROR:
        quieter.setLevel(logging.ERROR)  # e.g. "Could not specify device parameter for this pipeline type"
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(mlflow_uri)
    try:
        # MLflow and transformers print to stdout, which belongs to `hpo evaluate --json`
        with contextlib.redirect_stdout(sys.stderr):
            classifier = mlflow.transformers.load_model(model_uri, dst_path=str(folder), device=device)
    except MlflowException as error:
        reason = mask(" ".join(str(error.message).split()))[:240]
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ConfigError("--model-uri", model_uri, f"not found in MLflow at {mask(mlflow_uri)} ({reason}); "
                                                        "pass --mlflow with the sweep's storage.mlflow" + _sweep_mlflow_hint(sweep or {}, mlflow_uri)) from None
        raise ConfigError("--model-uri", model_uri, f"cannot load it as an MLflow transformers model ({reason})") from None
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # mlflow annotates str | Path; None unsets it, as it was
    task = getattr(classifier, "task", None)
    if task != TASK_SPECS[TEXT_CLASSIFICATION].pipeline or not hasattr(classifier, "model"):
        raise ConfigError("--model-uri", model_uri, f"a {task or type(classifier).__name__} model; {ONLY_TEXT}")
    target = torch.device(device)
    if classifier.device != target:
        classifier.model.to(target)
        classifier.device = target
    classifier.model.eval()
    return classifier


def _model_limit(classifier) -> int:
    """The longest input the model takes, in tokens: the tokenizer's limit, or the model's positions."""
    limits = [classifier.tokenizer.model_max_length, getattr(classifier.model.config, "max_position_embeddings", None)]
    limits = [limit for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000]
    return min(limits) if limits else 512


def predict(classifier, texts: list[str], batch_size: int, max_length: int) -> list[str]:
    """The predicted label of each text, in batches of similar lengths (less padding), in the texts' order."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode(), contextlib.redirect_stdout(sys.stderr):
        outputs = classifier([texts[i] for i in order], batch_size=batch_size, truncation=True, max_length=max_length)
    predicted = [""] * len(texts)
    for position, output in zip(order, outputs, strict=True):
        predicted[position] = str((output[0] if isinstance(output, list) else output)["label"])
    return predicted


def score(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> tuple[dict, dict, list, list[str]]:
    """(metrics, per-class F1 and counts, confusion matrix, notes).

    Macro averages are over the labels that occur in the file or among the predictions (as
    scikit-learn does): a label the model knows that neither occurs nor is predicted is left out
    rather than counted as 0.
    """
    from trials.metrics import classification_metrics, per_class_f1

    used = sorted(set(truth.tolist()) | set(predicted.tolist()))
    compact = {label_id: i for i, label_id in enumerate(used)}
    metrics = classification_metrics(np.array([compact[i] for i in truth.tolist()], dtype=np.int64),
                                      np.array([compact[i] for i in predicted.tolist()], dtype=np.int64), len(used))
    metrics = {name.removeprefix("val_"): value for name, value in metrics.items()}
    f1 = list(per_class_f1(truth, predicted, labels).values())
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = {
        label: {"f1": f1[i] if i in compact else None, "rows": int(confusion[i].sum()), "predicted": int(confusion[:, i].sum())}
        for i, label in enumerate(labels)
    }
    absent = [label for label, counts in per_class.items() if counts["rows"] == 0]
    notes = [f"no rows labelled {', '.join(absent)} in the file"
             + (f"; {', '.join(label for label in absent if per_class[label]['f1'] is None)} left out of the macro averages"
                if any(per_class[label]["f1"] is None for label in absent) else "")] if absent else []
    return metrics, per_class, confusion.tolist(), notes


def print_evaluation(result: Evaluation, console) -> None:
    """The scores as a table whose title says what was measured, then the sweep's own test score for comparison."""
    from rich.table import Table

    console.print(f"[bold]{result.title}[/bold]", highlight=False, soft_wrap=True)  # not a table title: that wraps to the table's width
    table = Table()
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    if result.study_test is not None:
        table.add_column(f"the sweep's test split ({result.study_test['rows']} rows)", justify="right", no_wrap=True)
    for name in METRICS:
        cells = [f"{result.metrics[name]:.4f}"]
        if result.study_test is not None:
            earlier = result.study_test["metrics"].get(name)
            cells.append("-" if earlier is None else f"{earlier:.4f}")
        table.add_row(METRIC_LABELS[name], *cells)
    for label, counts in result.per_class.items():
        f1 = "-" if counts["f1"] is None else f"{counts['f1']:.4f}"
        cells = [f"{f1} ({counts['rows']} rows)"]
        if result.study_test is not None:
            earlier = result.study_test["per_class_f1"].get(label)
            cells.append("-" if earlier is None else f"{earlier:.4f}")
        table.add_row(f"F1 {label}", *cells)
    table.add_row("rows", str(result.rows), *([str(result.study_test["rows"])] if result.study_test is not None else []))
    console.print(table)
    details = [f"labels from {result.label_column}, texts from {result.text_column}", f"max_length {result.max_length}"]
    if result.dropped:
        details.append(f"{result.dropped} row(s) without a text or a label dropped")
    console.print("  " + "; ".join(details), highlight=False, soft_wrap=True)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
    console.print("Nothing was written to the study or MLflow.", highlight=False)
