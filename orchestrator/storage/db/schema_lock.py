"""Serialise schema creation: two `hpo run` starting at once on a fresh database must not both
create (or migrate) the same tables (Optuna's, MLflow's or ours). Alembic's context is also
process-global, so threads wait too."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy

_THREADS = threading.Lock()
_ADVISORY_KEY = zlib.crc32(b"hpo-orchestrator schema")


@contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Hold a process lock, and one shared by every process: a PostgreSQL advisory lock, or an
    ``flock`` on a SQLite file (independent of SQLite's own locks, which it leaves alone)."""
    with _THREADS:
        try:
            parsed = sqlalchemy.engine.make_url(url)
            backend = parsed.get_backend_name()
        except sqlalchemy.exc.ArgumentError:  # an MLflow path or URI that is no database URL
            parsed, backend = None, None
        if backend == "sqlite" and parsed is not None and parsed.database and parsed.database != ":memory:":
            with _file_lock(parsed.database):
                yield
            return
        if backend != "postgresql":
            yield
            return
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_KEY})
                connection.commit()
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_KEY})
                    connection.commit()
        finally:
            engine.dispose()


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    import fcntl
    import os

    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # an empty file is an empty SQLite database
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)
