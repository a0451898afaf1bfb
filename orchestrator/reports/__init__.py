"""What people read about a study: the inspection views, the HTML report, the MLflow summary, hpo evaluate."""
