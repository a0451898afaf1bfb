"""The ``hpo_*`` tables: engine creation and Alembic migrations (version table ``hpo_alembic_version``,
so they never touch Optuna's own ``alembic_version``)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy
from alembic import command
from alembic.config import Config

from orchestrator.storage.study import SQLITE_BUSY_TIMEOUT_S

VERSION_TABLE = "hpo_alembic_version"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def create_engine(url: str) -> sqlalchemy.Engine:
    if sqlalchemy.engine.make_url(url).get_backend_name() == "sqlite":
        return sqlalchemy.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    return sqlalchemy.create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)


def upgrade(engine: sqlalchemy.Engine) -> None:
    """Create or migrate our tables to the newest version."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
