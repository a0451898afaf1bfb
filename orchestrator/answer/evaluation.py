"""The chosen configuration scored once on the test split, on the driver.

The test split never reaches a trial (:mod:`orchestrator.data.splits`): it is read here, after the
search and the confirmation have chosen, from the kept best-epoch parameters of the chosen
configuration's best run. Its metrics are the validation metrics' names with ``test_`` for
``val_``, plus a confusion matrix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from orchestrator.answer.confirm import SEED_PARAM
from orchestrator.tracking.best_model import KeptModel

TEST_PREFIX = "test_"


@dataclass(frozen=True)
class TestScore:
    metrics: dict[str, float]  # test_f1_macro, test_accuracy, ..., test_f1_class.<label>
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    rows: int
    trial: int  # the search trial whose configuration was scored
    run_id: str  # the MLflow run whose model was scored

    def to_dict(self) -> dict:
        return asdict(self)


def score_on_test(settings, test_split, kept: KeptModel, search_trial: int) -> TestScore:
    """Rebuild the kept model (pre-trained weights + its trained parameters) and score it on ``test_split``."""
    import torch

    from orchestrator.progress.quiet_transformers import quiet_transformers
    from trials import checkpoint
    from trials.finetune import Hyperparameters, predict
    from trials.metrics import classification_metrics, per_class_f1
    from trials.tasks import task_for

    task = task_for(settings)
    hyperparameters = Hyperparameters.from_mapping({k: v for k, v in kept.params.items() if k != SEED_PARAM})
    with quiet_transformers():
        model = task.load_model(hyperparameters)
    checkpoint.apply_weights(model, checkpoint.best_model_weights(kept.weights_file.parent))
    confusion: list = []  # text generation has no classes to confuse
    if hasattr(task, "evaluate"):  # text generation: loss, perplexity and generation scores
        metrics = task.evaluate(model, test_split, settings.eval_batch_size, torch.device("cpu"))
    else:
        loss, predictions = predict(model, task, test_split, batch_size=settings.eval_batch_size, device=torch.device("cpu"))
        labels = test_split.labels
        metrics = {"val_loss": loss, **classification_metrics(labels, predictions, len(settings.label_names)),
                   **per_class_f1(labels, predictions, settings.label_names)}
        counts = np.zeros((len(settings.label_names),) * 2, dtype=np.int64)
        np.add.at(counts, (labels, predictions), 1)
        confusion = counts.tolist()
    return TestScore({TEST_PREFIX + name.removeprefix("val_"): float(value) for name, value in metrics.items()},
                     confusion, len(test_split), search_trial, kept.run_id)


def confusion_matrix_png(score: TestScore, label_names: list[str], path: Path) -> Path:
    """The test confusion matrix as a PNG image (counts in the cells)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    counts = np.asarray(score.confusion)
    figure, axes = pyplot.subplots(figsize=(1.2 + 0.8 * len(label_names), 1.0 + 0.8 * len(label_names)))
    axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    axes.set_yticks(range(len(label_names)), label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"test split, {score.rows} rows (trial {score.trial})")
    for (row, column), count in np.ndenumerate(counts):
        axes.text(column, row, str(count), ha="center", va="center", color="white" if count > counts.max() / 2 else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
