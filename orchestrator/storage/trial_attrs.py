"""The user attributes hpo keeps on Optuna studies and trials, read by the inspection commands,
the report and the next invocation (a study database is read by name, so the names are the
contract)."""

# On a trial
STATE_REASON = "state_reason"  # why the trial ended as it did: "completed", "stopped early after 1 epoch(s)", an error
MLFLOW_RUN_ID = "mlflow_run_id"  # the trial's MLflow run, a child of its invocation's parent run
RAY_TRIAL_ID = "ray_trial_id"  # the Ray Tune trial that ran it
RETRY_OF = "retry_of"  # on a queued retry: the number of the unfinished trial it runs again
CONFIRMS = "confirms"
"""On a confirmation run: the number of the search trial it repeats."""
SEED_ATTR = "confirmation_seed"
"""On a confirmation run: its training seed (a queued trial has no params yet, only user attributes)."""

# On a study
MLFLOW_EXPERIMENT_ID = "mlflow_experiment_id"  # the MLflow experiment of the study's runs (reports link to them)
ANSWER_ATTR = "hpo_answer"  # the sweep's answer (orchestrator.answer.settle.Answer.to_dict())
SPLITS_ATTR = "hpo_data_splits"
"""How the data was split, rows per split and each split's digest."""
