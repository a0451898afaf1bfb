"""The prefix of every tag hpo sets on MLflow runs, experiments and model versions
(``hpo.study``, ``hpo.exit_status``, ...), so a search in MLflow finds them by name."""

TAG_PREFIX = "hpo."
