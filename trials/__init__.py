"""Code that runs on Ray workers: data, model, fine-tuning loop and metrics.

Nothing here imports ``orchestrator``: a trial receives plain settings and hyperparameters
and reports metrics through one callable.
"""
