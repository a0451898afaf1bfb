"""The study database: an Optuna RDB storage on SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from orchestrator.errors import ConfigError
from orchestrator.secrets import MISREAD_USERINFO_FIX, mask, misread_userinfo, remember_url
from orchestrator.storage.trial_attrs import ANSWER_ATTR, CONFIRMS, RETRY_OF, SEED_ATTR, SPLITS_ATTR
from orchestrator.sweep import default_stores
from trials.objective import optuna_direction

if TYPE_CHECKING:  # the inspection commands open study databases without loading the sweep file's models
    from orchestrator.sweep.config import SweepConfig

SQLITE_BUSY_TIMEOUT_S = 60  # how long every SQLite connection waits for a concurrent writer


def sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    return Path(parsed.database) if parsed.database and parsed.database != ":memory:" else None


# The study database's backends: what the README documents and schema_lock serialises.
STUDY_BACKENDS = ("sqlite", "postgresql")


def check_reachable(url: str, field: str = "storage.study_db", backends: tuple[str, ...] = STUDY_BACKENDS) -> None:
    """Raise :class:`ConfigError` unless ``url`` is a database of one of ``backends`` we can connect to. Writes nothing."""
    remember_url(url)
    if misread_userinfo(url):  # before parsing: the parser's own errors quote pieces of the password
        raise ConfigError(field, url, MISREAD_USERINFO_FIX)
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(field, url, f"not a database URL; use {default_stores.STUDY_DB} or postgresql+psycopg://user@host/db "
                                            "(with a port, a number: host:5432)") from None
    if parsed.get_backend_name() not in backends:
        raise ConfigError(field, url, f"unsupported database {parsed.get_backend_name()!r}; use {' or '.join(backends)}, "
                                            f"e.g. {default_stores.STUDY_DB} or postgresql+psycopg://user@host/db")
    sqlite_path = sqlite_file(url)
    if sqlite_path is not None:
        if not sqlite_path.resolve().parent.is_dir():
            raise ConfigError(field, url, f"folder {sqlite_path.parent} does not exist; create it or change the path")
        if sqlite_path.is_dir():
            raise ConfigError(field, url, f"{sqlite_path} is a folder; name a database file in it, e.g. sqlite:///{sqlite_path / 'hpo.db'}")
        return
    if parsed.get_backend_name() == "sqlite":
        return
    try:
        engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except ModuleNotFoundError as error:
        install = "'psycopg[binary]' and use postgresql+psycopg://" if parsed.get_backend_name() == "postgresql" else "it"
        raise ConfigError(field, url, f"driver {error.name!r} is not installed; pip install {install}") from None
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = mask(" ".join(str(getattr(error, "orig", error)).split()))[:160]
        raise ConfigError(field, url, f"cannot connect ({reason}); start the server or fix the URL") from None


def enable_wal(url: str) -> None:
    """Put a SQLite database file in WAL mode (it persists in the file): readers then never block the writer."""
    sqlite_path = sqlite_file(url)
    if sqlite_path is None:
        return
    # Switching needs the file to itself: wait for readers like any other writer, and do not ask
    # again once it is WAL (a sweep starting while a script polls the study must not fail).
    connection = sqlite3.connect(sqlite_path, timeout=SQLITE_BUSY_TIMEOUT_S)
    try:
        if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
def _tune_sqlite_connection(dbapi_connection, connection_record) -> None:
    # Every SQLite connection in the process (Optuna's, MLflow's, ours) waits up to a minute for a
    # concurrent writer instead of failing with "database is locked". In WAL mode,
    # synchronous=NORMAL cannot corrupt the database (a power cut may lose the last commits, a
    # crashed process loses nothing) and saves an fsync per commit: about 20 commits per trial.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url``. SQLite gets WAL mode and a busy timeout so readers never block a sweep."""
    sqlite_path = sqlite_file(url)
    if sqlite_path is not None:
        enable_wal(url)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    elif make_url(url).get_backend_name() == "sqlite":
        engine_kwargs = {}
    else:
        engine_kwargs = {"pool_size": 4, "max_overflow": 4, "pool_pre_ping": True, "pool_recycle": 1800}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def startup_trials(config: SweepConfig) -> int:
    """Random trials before TPE models the space: a third of the budget, between 2 and 10."""
    if config.sampler.n_startup_trials is not None:
        return config.sampler.n_startup_trials
    return min(10, max(2, config.budget.n_trials // 3))


def open_study(config: SweepConfig, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the sweep's study, or load it to continue when it exists. Its sampler's random
    draws depend on the sweep's seed and on the trials the study already holds: a continued
    study never proposes its earlier points again, and the same invocations repeat the same."""
    from orchestrator.search.registries import SAMPLERS, SamplerInputs

    directions = [optuna_direction(objective.mode) for objective in config.objective_list]
    study = optuna.create_study(
        study_name=config.name, storage=storage, sampler=optuna.samplers.RandomSampler(), directions=directions, load_if_exists=True
    )
    history = len(study.get_trials(deepcopy=False))
    study.sampler = SAMPLERS[config.sampler.name](SamplerInputs(config.sampler.seed, startup_trials(config), config.search_space, history))
    if [direction.name.lower() for direction in study.directions] != directions:
        field, value = ("objectives", directions) if config.objectives else ("objective.mode", config.objective.mode)
        raise ConfigError(
            field, value,
            f"study {config.name!r} already exists with other objective directions; keep them, or pass --new-study (or rename the sweep)",
        )
    return study


def check_space_unchanged(study: optuna.Study, config: SweepConfig) -> None:
    """Refuse a search space the study's earlier trials cannot be mixed with (nothing is written)."""
    from orchestrator.search.search_space import space_changes

    used: dict = {}
    for trial in study.get_trials(deepcopy=False):
        used.update(trial.distributions)
    changes = space_changes(used, config.search_space.distributions())
    if changes:
        raise ConfigError(
            "search_space", "; ".join(changes),
            f"study {config.name!r} was searched with other values for these parameters; keep them, "
            "or pass --new-study to continue in a new versioned study (or rename the sweep)",
        )


def next_version_name(url: str, name: str) -> str:
    """``name-v2``, ``name-v3``, ...: the first study name not taken in the database at ``url``."""
    taken = set(optuna.get_all_study_names(open_storage(url)))
    base = re.sub(r"-v\d+$", "", name)
    version = 2
    while f"{base}-v{version}" in taken:
        version += 1
    return f"{base}-v{version}"


def enqueue_points(study: optuna.Study, points: list[dict]) -> int:
    """Queue known-good points to run first; a point the study already has is skipped. Returns how many were queued."""
    before = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    for point in points:
        study.enqueue_trial(point, skip_if_exists=True)
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))) - before


CARRIED_USER_ATTRS = (CONFIRMS, SEED_ATTR)
"""What a queued retry keeps of the trial it repeats (a confirmation run: the search trial it confirms)."""


def requeue(study: optuna.Study, trial: optuna.trial.BaseTrial) -> None:
    """Queue an unfinished trial's parameters so the next trial runs them again (:data:`~orchestrator.storage.trial_attrs.RETRY_OF` links the two)."""
    if trial.params:
        carried = {key: trial.user_attrs[key] for key in CARRIED_USER_ATTRS if key in trial.user_attrs}
        study.enqueue_trial(trial.params, user_attrs={**carried, RETRY_OF: trial.number}, skip_if_exists=False)


def check_splits_unchanged(study: optuna.Study, splits) -> None:
    """Refuse data whose training or validation rows differ from those the study's trials used (nothing is written)."""
    recorded = (study.user_attrs.get(SPLITS_ATTR) or {}).get("digests", {})
    current = splits.digests() if splits is not None else {}
    changed = [name for name in ("train", "validation") if recorded.get(name) and current.get(name) and recorded[name] != current[name]]
    if changed:
        raise ConfigError(
            "data", {"changed splits": changed, "now": splits.origin},
            f"study {study.study_name!r}'s trials were trained and scored on other {' and '.join(changed)} rows; keep data "
            "(source, sizes, split_seed) as it was, or pass --new-study to continue in a new versioned study",
        )


def record_splits(study: optuna.Study, splits) -> None:
    """Remember the splits in the study; a test score measured on other test rows is dropped from the stored answer."""
    if splits is None:
        return
    digests = splits.digests()
    recorded = study.user_attrs.get(SPLITS_ATTR) or {}
    answer = study.user_attrs.get(ANSWER_ATTR)
    if answer and answer.get("test") and recorded.get("digests", {}).get("test") != digests.get("test"):
        study.set_user_attr(ANSWER_ATTR, {**answer, "test": None})
    record = {"origin": splits.origin, "rows": splits.sizes(), "digests": digests, **split_facts(splits)}
    if recorded != record:
        study.set_user_attr(SPLITS_ATTR, record)


def split_facts(splits) -> dict:
    """What every place that shows a score says beside it (``orchestrator.reports.data_facts``): rows of validation
    and test also in train, and the majority-class baseline on validation (classification)."""
    from trials.metrics import majority_baseline

    facts: dict = {"overlap": splits.overlap()}
    if len(splits.label_names) > 1:  # text generation has one "label": no classes, no baseline
        baseline = majority_baseline(splits.train.labels, splits.validation.labels, len(splits.label_names))
        facts["baseline"] = {name: round(float(value), 6) for name, value in baseline.items()}
    return facts
