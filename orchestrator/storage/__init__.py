"""Where the study lives: the Optuna study database and our own tables beside it.

``study``: the Optuna RDB storage (SQLite or PostgreSQL) and the sampler; ``db``: the ``hpo_*``
tables and their Alembic migrations; ``ledger``: who ran which trial, linking Optuna, Ray and
MLflow; ``lease``: one invocation at a time per study; ``trial_attrs``: every study and trial
attribute name; ``ranking``: the one ranking of best trials; ``summary``: the study at a glance.
"""
