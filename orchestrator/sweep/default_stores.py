"""Where a sweep keeps what it makes when its file's ``storage`` section does not say: beside the
sweep file (the command line's options default to the same, in the current folder)."""

STUDY_DB = "sqlite:///hpo.db"  # the Optuna study, the ledger and the lease
MLFLOW = "sqlite:///mlruns.db"  # MLflow's tracking store and model registry
RESULTS_DIR = "hpo_runs"  # Ray Tune's trial folders and the kept best models
