"""MLflow: the parent run and the trials' runs, their tags, dataset inputs and the registered model."""
