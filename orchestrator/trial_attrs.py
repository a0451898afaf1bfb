"""The user attributes hpo keeps on each Optuna trial, read by the inspection commands, the
report and the next invocation (a study database is read by name, so the names are the contract)."""

STATE_REASON = "state_reason"  # why the trial ended as it did: "completed", "stopped early after 1 epoch(s)", an error
MLFLOW_RUN_ID = "mlflow_run_id"  # the trial's MLflow run, a child of its invocation's parent run
