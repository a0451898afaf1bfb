"""The ``hpo`` Typer app, the options its command groups share, and their common set-up."""

from __future__ import annotations

import logging

import typer

from orchestrator.cli.usage import OneLineUsageErrors
from orchestrator.exit_codes import EXIT_CODE_MEANINGS
from orchestrator.secrets import remember_url
from orchestrator.sweep import default_stores

app = typer.Typer(
    cls=OneLineUsageErrors,
    name="hpo",
    help=(
        "Hyperparameter search for fine-tuning Hugging Face models.\n\n"
        "Ray Tune schedules the trials, Optuna proposes each configuration, the study lives in a SQL "
        "database (SQLite by default, PostgreSQL for teams) and every trial is logged to MLflow.\n\n"
        "Start with:  hpo run sweeps/demo.yaml\n\n"
        "Exit codes: " + ", ".join(f"{int(code)} {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items()) + "."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
SweepArg = typer.Argument(..., help="Sweep file (YAML). See the README for its keys.", exists=False)
DebugOpt = typer.Option(False, "--debug", help="Show full tracebacks and Ray worker logs.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables.")
RayAddressOpt = typer.Option(
    None, "--ray-address", envvar="RAY_ADDRESS",
    help="Run on this Ray cluster instead of cluster.address: auto, HOST:6379 from a cluster node, or ray://HOST:10001. Env: RAY_ADDRESS.",
)

DbOpt = typer.Option(
    default_stores.STUDY_DB, "--db", envvar="HPO_STUDY_DB", callback=remember_url,
    help="Study database URL (a sweep's storage.study_db). Env: HPO_STUDY_DB.",
)
StudyArg = typer.Argument(..., help="Study name (the sweep file's name).")


def quiet_libraries(debug: bool) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if debug else optuna.logging.WARNING)
    for name in ("mlflow", "alembic", "ray", "ray.tune", "ray.train", "transformers"):
        logging.getLogger(name).setLevel(logging.INFO if debug else logging.CRITICAL)
