"""Code that runs on Ray workers: data, models, the fine-tuning loop of each task type, metrics,
and the reporting surface a training function of your own uses (``from trials import report``;
``trials.hf.ReportCallback`` for Hugging Face ``Trainer`` scripts).

Nothing here imports ``orchestrator``: a trial receives plain settings and hyperparameters
and reports metrics through one callable.
"""
