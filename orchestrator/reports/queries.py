"""Read-only views of a study database for the inspection commands (``hpo studies/trials/best``)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from orchestrator.answer.settle import SEARCH_SCORE
from orchestrator.errors import ConfigError
from orchestrator.storage.ranking import maximized, primary_value, rank
from orchestrator.storage.trial_attrs import ANSWER_ATTR, MLFLOW_RUN_ID, STATE_REASON
from trials.objective import mode_of

SORT_KEYS = ("number", "value", "duration")


def open_for_reading(url: str) -> optuna.storages.RDBStorage:
    """The study storage at ``url``; a missing SQLite file is an error, never silently created."""
    from orchestrator.storage.study import SQLITE_BUSY_TIMEOUT_S, check_reachable, sqlite_file

    check_reachable(url, field="--db")
    database_file = sqlite_file(url)
    if database_file is not None and not database_file.is_file():
        raise ConfigError("--db", url, "no study database there; pass the URL your sweep's storage.study_db uses")
    parsed = make_url(url)
    if not _optuna_schema_ready(url):
        raise ConfigError("--db", url, "no studies there yet (the database has no complete Optuna schema); run a sweep first")
    engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if parsed.get_backend_name() == "sqlite" else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=True)  # the schema is there; a reader never writes


def _optuna_schema_ready(url: str) -> bool:
    """True once Optuna finished creating its tables: it stamps ``alembic_version`` last.

    Opening an RDBStorage on a database without them would create them, racing a sweep that
    is creating them at the same moment; a reader must never write.
    """
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            return (connection.execute(sqlalchemy.text("SELECT count(*) FROM alembic_version")).scalar() or 0) > 0
    except sqlalchemy.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    """The study ``name`` in ``storage``; an unknown name is a :class:`ConfigError` listing the studies there."""
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name not in names:
        raise ConfigError("STUDY", name, f"no such study; studies here: {', '.join(sorted(names)) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def studies(storage: optuna.storages.BaseStorage) -> list[dict]:
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        ranked = rank(study, [t for t in trials if t.state == TrialState.COMPLETE])
        starts = [t.datetime_start for t in trials if t.datetime_start]
        rows.append({
            "study": summary.study_name,
            "direction": ",".join(mode_of(direction) for direction in study.directions),
            "trials": dict(Counter(t.state.name for t in trials)),
            "best_value": primary_value(ranked[0]) if ranked else None,
            "last_run": _iso(max(starts)) if starts else None,
        })
    return rows


def trial_row(trial: optuna.trial.FrozenTrial) -> dict:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.values[0] if trial.values else None,  # the primary objective
        "values": list(trial.values) if trial.values else None,
        "params": trial.params,
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
        "started": _iso(trial.datetime_start),
        "mlflow_run_id": trial.user_attrs.get(MLFLOW_RUN_ID),
        "reason": trial.user_attrs.get(STATE_REASON),
    }


def trials(storage: optuna.storages.BaseStorage, name: str, states: list[str] | None = None, sort: str = "number") -> list[dict]:
    if sort not in SORT_KEYS:
        raise ConfigError("--sort", sort, f"sort by one of {', '.join(SORT_KEYS)}")
    wanted = None
    if states:
        valid = [state.name for state in TrialState]
        unknown = [state for state in states if state.upper() not in valid]
        if unknown:
            raise ConfigError("--state", unknown[0], f"valid states are {', '.join(valid)}")
        wanted = tuple(TrialState[state.upper()] for state in states)
    study = load_study(storage, name)
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False, states=wanted)]
    if sort == "value":
        maximize = maximized(study)
        rows.sort(key=lambda row: (row["value"] is None, -(row["value"] or 0) if maximize else (row["value"] or 0)))
    elif sort == "duration":
        rows.sort(key=lambda row: (row["duration_s"] is None, -(row["duration_s"] or 0)))
    return rows


def best(storage: optuna.storages.RDBStorage, name: str, top: int = 1) -> list[dict]:
    """The ``top`` best completed trials, the sweep's chosen configuration first (its answer
    attached); with several objectives, the whole Pareto front. Each row's ``configuration`` is what
    its trial ran with: the sweep's fixed values and the trial's searched ones, ready to paste."""
    from orchestrator.reports.data_facts import data_facts

    study = load_study(storage, name)
    fixed = ((recorded_sweep(storage.engine, name) or {}).get("search_space") or {}).get("fixed") or {}
    ranked = [trial_row(t) for t in rank(study, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))]
    for row in ranked:
        row["fixed"] = dict(fixed)
        row["configuration"] = {**fixed, **row["params"]}
    if len(study.directions) > 1:
        return ranked
    facts = data_facts(study)
    for row in ranked:
        row["measured_on"] = SEARCH_SCORE
        row["data"] = facts
    answer = study.user_attrs.get(ANSWER_ATTR)
    if answer is None:
        return ranked[:top]
    chosen = [row for row in ranked if row["number"] == answer["trial"]]
    for row in chosen:
        row["answer"] = answer  # the chosen configuration: its confirmed and test scores
    return (chosen + [row for row in ranked if row["number"] != answer["trial"]])[:top]


def recorded_sweep(engine: sqlalchemy.Engine, study_name: str) -> dict | None:
    """The sweep file the study last ran with, as recorded in the study database (secrets masked);
    None when the database has no such record (a study not made by ``hpo run``)."""
    import json

    from orchestrator.storage.db.models import Sweep

    try:
        with engine.connect() as connection:
            snapshot = connection.execute(sqlalchemy.select(Sweep.config_json).where(Sweep.name == study_name)).scalar()
    except sqlalchemy.exc.SQLAlchemyError:
        return None
    try:
        return json.loads(snapshot) if snapshot else None
    except ValueError:
        return None


EXPORT_FORMATS = ("csv", "json", "parquet")


def export(storage: optuna.storages.BaseStorage, name: str, fmt: str, path: Path) -> int:
    """Write every trial of the study (one row each: state, value, params_*, user_attrs_*, times) to ``path``."""
    import pandas as pd

    if fmt not in EXPORT_FORMATS:
        raise ConfigError("--format", fmt, f"choose one of {', '.join(EXPORT_FORMATS)}")
    frame = load_study(storage, name).trials_dataframe(attrs=("number", "state", "value", "datetime_start", "datetime_complete", "duration", "params", "user_attrs"))
    if "duration" in frame:  # seconds; none yet while every trial runs (the column then holds no timedeltas)
        frame["duration"] = pd.to_timedelta(frame["duration"]).dt.total_seconds()
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "json":
        frame.to_json(path, orient="records", date_format="iso", indent=2)
    else:
        frame.to_parquet(path, index=False)
    return len(frame)
