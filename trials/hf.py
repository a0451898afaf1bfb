"""Hugging Face ``Trainer`` scripts as trials: a callback that reports each evaluation to the sweep.

A script becomes a training function (the sweep's ``trial.function``) with two added lines::

    from trials.hf import ReportCallback                                     # 1

    def main(config):
        args = TrainingArguments(output_dir=..., learning_rate=config["learning_rate"],
                                 eval_strategy="epoch", report_to="none")
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                          compute_metrics=compute_metrics, callbacks=[ReportCallback()])   # 2
        trainer.train()

Each evaluation is one epoch for the sweep and its scheduler; the one after the last training
step is final. Metric names follow the built-in trials: ``eval_loss`` is reported as
``val_loss``, ``eval_f1_macro`` (``f1_macro`` from ``compute_metrics``) as ``val_f1_macro``,
the last logged training loss as ``train_loss``.
"""

from __future__ import annotations

from transformers import TrainerCallback

from trials import report

_TIMINGS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def sweep_metrics(evaluation: dict) -> dict[str, float]:
    """A ``Trainer`` evaluation's numbers under the sweep's names: ``eval_X`` becomes ``val_X``; timings and ``epoch`` are left out."""
    metrics = {}
    for name, value in evaluation.items():
        if name in _TIMINGS or name == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        metrics["val_" + name.removeprefix("eval_") if name.startswith("eval_") else name] = float(value)
    return metrics


class ReportCallback(TrainerCallback):
    """Reports every evaluation of a ``Trainer`` to the sweep, and stops training when the trial
    has reported its last epoch (``trial.max_epochs`` or early-stopping patience)."""

    def __init__(self) -> None:
        self.train_loss: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.train_loss = float(logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        values = sweep_metrics(metrics or {})
        if self.train_loss is not None:
            values.setdefault("train_loss", self.train_loss)
        report.epoch(values, final=state.max_steps > 0 and state.global_step >= state.max_steps)
        if report.should_stop():
            control.should_training_stop = True
