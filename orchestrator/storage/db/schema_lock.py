"""Serialise schema creation: two `hpo run` starting at once on a fresh database must not both
create (or migrate) the same tables (Optuna's, MLflow's or ours). Alembic's context is also
process-global, so threads wait too.

A SQLite database is locked through a lock file beside it, never through the database file:
closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
included (SQLite's "How To Corrupt An SQLite Database File", section 2.2). A reader would then
believe it was the last connection and delete the write-ahead log a running sweep still writes.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy

_THREADS = threading.Lock()
_ADVISORY_KEY = zlib.crc32(b"hpo-orchestrator schema")
LOCK_FILE_SUFFIX = ".hpo-lock"


def lock_file(database: Path) -> Path:
    """The file whose ``flock`` serialises schema changes of the SQLite ``database``."""
    return database.with_name(database.name + LOCK_FILE_SUFFIX)


@contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Hold a process lock, and one shared by every process: a PostgreSQL advisory lock, or an
    ``flock`` on a lock file beside a SQLite database (whose own files only SQLite touches)."""
    with _THREADS:
        try:
            parsed = sqlalchemy.engine.make_url(url)
            backend = parsed.get_backend_name()
        except sqlalchemy.exc.ArgumentError:  # an MLflow path or URI that is no database URL
            parsed, backend = None, None
        if backend == "sqlite" and parsed is not None and parsed.database and parsed.database != ":memory:":
            with _file_lock(lock_file(Path(parsed.database))):
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
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl
    import os

    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)
