"""MLflow logging through :class:`mlflow.MlflowClient` with explicit run ids.

No fluent API and no global active run: trials run in parallel, and their runs are
created by the driver as children of one parent run per ``hpo run`` invocation.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow import MlflowClient
from mlflow.entities import DatasetInput, Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from orchestrator.secrets import mask
from orchestrator.tracking import mlflow_tags
from trials.task_specs import TEXT_CLASSIFICATION, TEXT_GENERATION

if TYPE_CHECKING:
    from orchestrator.data.prepare import PreparedSweep
    from orchestrator.exit_codes import ExitStatus
    from orchestrator.sweep.config import SweepConfig

# Against a tracking server MLflow prints each finished run's URL to stdout (the stream of
# `hpo run --json`), after one extra request per run to look it up.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_LENGTH = 6000


def _param_value(value: object) -> str:
    return mask(str(value))[:_MAX_PARAM_LENGTH]


class MlflowTracker:
    """Creates parent and child runs in one experiment and logs to them by id."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_root: Path | None = None) -> None:
        """``artifact_root``: where a new experiment keeps its artifacts when the tracking store has no
        folder of its own (a PostgreSQL, MySQL or MSSQL database used without a tracking server)."""
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is not None:
            self.experiment_id = experiment.experiment_id  # its artifacts stay where they were put
        else:
            location = experiment_artifact_location(tracking_uri, experiment_name, artifact_root)
            self.experiment_id = self.client.create_experiment(experiment_name, artifact_location=location)

    def start_run(self, name: str, params: Mapping[str, object], tags: Mapping[str, object], parent_run_id: str | None = None) -> str:
        all_tags: dict[str, object] = {MLFLOW_RUN_NAME: name, **tags}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags={k: mask(str(v)) for k, v in all_tags.items()})
        items = [Param(key, _param_value(value)) for key, value in params.items()]
        for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run.info.run_id, params=items[start : start + _MAX_PARAMS_PER_BATCH])
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, mask(text), artifact_file)

    def log_inputs(self, run_id: str, datasets: Sequence[DatasetInput]) -> None:
        """Record the datasets a run read (see :mod:`orchestrator.tracking.dataset_inputs`): the UI's Dataset column."""
        self.client.log_inputs(run_id, datasets=list(datasets))

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(key, mask(str(value))) for key, value in tags.items()])

    def finish(self, run_id: str, status: str, *, tags: Mapping[str, object], metrics: Mapping[str, float] | None = None, step: int = 0,
               ended_ms: int | None = None) -> None:
        """Log the final tags and metrics in one request, then close the run with ``status`` (ended ``ended_ms``, default now)."""
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(key, float(value), now, step) for key, value in (metrics or {}).items()],
            tags=[RunTag(key, mask(str(value))) for key, value in tags.items()],
        )
        self.client.set_terminated(run_id, status=status, end_time=ended_ms)


    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def describe_study(self, study, metric: str) -> None:
        """The experiment's description (MLflow's note): the study at a glance, linking its best run.

        Every ``hpo run`` of a study is one parent run in the study's experiment; this note is
        what ties the nightly invocations together on the experiment page.
        """
        from collections import Counter

        from orchestrator.storage.summary import summarize_study

        counts, best, _ = summarize_study(study)
        invocations = self.client.search_runs([self.experiment_id], f"tags.`{mlflow_tags.ROLE}` = '{mlflow_tags.SWEEP_ROLE}'", max_results=5000)
        states = ", ".join(f"{n} {state.lower()}" for state, n in sorted(Counter(counts).items()))
        lines = [
            f"**Study `{study.study_name}`**: each `hpo run` is one parent run (tag `{mlflow_tags.ROLE} = {mlflow_tags.SWEEP_ROLE}`); its trials are nested under it.",
            "",
            "| | |",
            "|---|---|",
            f"| invocations | {len(invocations)} |",
            f"| trials | {sum(counts.values())} ({states}) |",
        ]
        if best is not None:
            link = f"[run](#/experiments/{self.experiment_id}/runs/{best.mlflow_run_id})" if best.mlflow_run_id else ""
            lines.append(f"| best {metric} | {best.value:.4f}: trial {best.number} {link} |")
        lines.append(f"| updated | {time.strftime('%Y-%m-%d %H:%M:%S %Z')} |")
        self.client.set_experiment_tag(self.experiment_id, "mlflow.note.content", "\n".join(lines))
        self.client.set_experiment_tag(self.experiment_id, mlflow_tags.STUDY, study.study_name)


ARTIFACTS_FOLDER = "mlartifacts"
"""Beside a SQLite tracking database, the folder of its runs' artifacts (logged models included), as
``mlflow server`` keeps them: it belongs to the MLflow store and is kept with it."""


def experiment_artifact_location(tracking_uri: str, experiment_name: str, fallback: Path | None = None) -> str | None:
    """Where a new experiment's artifacts go: a tracking server decides itself (None); a SQLite store keeps
    them in ``mlartifacts/`` beside its database file; a database without a folder in ``fallback``."""
    from orchestrator.storage.study import sqlite_file

    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    try:
        database = sqlite_file(tracking_uri)
    except Exception:  # noqa: BLE001 - not a database URL: MLflow's own default
        database = None
    folder = database.resolve().parent / ARTIFACTS_FOLDER if database is not None else fallback
    if folder is None:
        return None
    # One folder per experiment, named after it (its runs and models inside are named by unique ids).
    return (folder.resolve() / _safe_folder_name(experiment_name)).as_uri()


def _safe_folder_name(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def mlflow_ui(tracking_uri: str) -> str | None:
    """The MLflow UI's base URL when the tracking store is a server; None for local stores."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else None


def code_version(folder: Path | None = None) -> str | None:
    """The git commit of ``folder`` (default: the working directory), with ``+dirty`` when it has
    uncommitted changes; None outside a git checkout."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def start_sweep_run(tracker: MlflowTracker, config: SweepConfig, prepared: PreparedSweep, n_trials: int, invocation_id: str) -> str:
    """Open the invocation's parent run (its trials' runs nest under it) with the sweep's parameters
    and tags; return its run id."""
    return tracker.start_run(
        name=f"{config.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
        params=sweep_params(config, prepared, n_trials),
        tags={
            mlflow_tags.STUDY: config.name, mlflow_tags.ROLE: mlflow_tags.SWEEP_ROLE, mlflow_tags.INVOCATION_ID: invocation_id,
            mlflow_tags.HOST: socket.gethostname(), mlflow_tags.USER: getpass.getuser(),
            mlflow_tags.SAMPLER: config.sampler.name, mlflow_tags.SCHEDULER: config.scheduler.name,
            mlflow_tags.OBJECTIVE: ", ".join(f"{o.mode} {o.metric}" for o in config.objective_list),
            **({mlflow_tags.CODE_VERSION: version} if (version := code_version()) else {}),
        },
    )


def log_sweep_definition(tracker: MlflowTracker, parent_run_id: str, config: SweepConfig) -> None:
    """The sweep's configuration (secrets masked) and search space, as files on the parent run."""
    import yaml

    from orchestrator.storage.ledger import config_snapshot

    tracker.log_text(parent_run_id, config_snapshot(config), "sweep.json")  # secrets masked
    tracker.log_text(parent_run_id, yaml.safe_dump(config.search_space.model_dump(mode="json", exclude_none=True), sort_keys=False), "search_space.yaml")


def end_parent_run(tracking_uri: str, parent_run_id: str, status: ExitStatus) -> None:
    """Mark a parent run ended with the invocation's exit status (when it ends by raising)."""
    client = MlflowClient(tracking_uri)
    client.set_tag(parent_run_id, mlflow_tags.EXIT_STATUS, status)
    client.set_terminated(parent_run_id, status=status.mlflow_status)


def sweep_params(config: SweepConfig, prepared: PreparedSweep, n_trials: int) -> dict[str, object]:
    """The parameters of an invocation's parent run: what it searched, on what, with which budget."""
    from orchestrator.storage.study import startup_trials

    if config.user_function:
        inputs: dict[str, object] = {"trial.function": config.trial.function}
    else:
        data = prepared.task_data
        inputs = {
            "task": config.task,
            "model": config.model,
            "data.source": config.task_data.source,
            "data.train_size": len(data.train),
            "data.val_size": len(data.val),
            "data.test_size": len(prepared.test) if prepared.test is not None else 0,
            "data.splits": prepared.task_splits.origin,
            "confirm": f"top {config.confirm.top_k} x {config.confirm.seeds} seeds" if config.confirm.top_k else "off",
            "trial.cache_frozen": data.frozen.summary() if data.frozen is not None else config.trial.cache_frozen,
        }
        inputs.update({f"data.overlap.{name}_in_train": count for name, count in prepared.task_splits.overlap().items()})
        if config.task in (TEXT_CLASSIFICATION, TEXT_GENERATION):
            inputs["data.max_length"] = config.task_data.max_length
        if config.task == TEXT_GENERATION:
            inputs["data.max_new_tokens"] = config.task_data.max_new_tokens
    params = {
        **inputs,
        "objective": ", ".join(f"{objective.mode} {objective.metric}" for objective in config.objective_list),
        "sampler": config.sampler.name,
        "sampler.seed": config.sampler.seed,
        "sampler.n_startup_trials": startup_trials(config),
        "scheduler": config.scheduler.name,
        "n_trials": n_trials,
        "max_concurrent": config.budget.max_concurrent,
        "max_epochs": config.trial.max_epochs,
        "resources.cpu": config.resources.cpu,
        "resources.gpu": config.resources.gpu,
        "resources.memory_gb": config.resources.memory_gb,
    }
    params.update({f"baseline.{key}": round(value, 4) for key, value in prepared.baseline.items()})
    return params
