"""Paths in a sweep file: the field types that carry them, and how each is resolved.

Ray Tune runs each trial in a working directory of its own, so a relative path would mean
something else on a worker than on the driver: every path-bearing field of the sweep file is
resolved once, while it is validated, against the sweep file's folder (``parse_sweep``'s
``base_dir``), and everything downstream sees absolute paths. A new field opts in by taking one
of the annotations here: :data:`LocalPath`, :data:`ModelReference` or :data:`DatabaseURL`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from orchestrator.sweep.bundled import is_bundled


def base_dir_of(info: ValidationInfo) -> Path:
    """The folder relative paths start at: the sweep file's; the working directory when none was given."""
    return Path((info.context or {}).get("base_dir") or Path.cwd())


def absolute_path(path: str, base_dir: Path) -> str:
    """``path`` with ``~`` expanded and, when relative, joined to ``base_dir`` (``..`` folded, symlinks kept)."""
    return os.path.normpath(Path(base_dir) / Path(path).expanduser())


def _local_path(value: str, info: ValidationInfo) -> str:
    if is_bundled(value) or "://" in value:
        return value  # bundled:NAME, s3://bucket/... : not a local path
    return absolute_path(value, base_dir_of(info))


_PATH_PREFIXES = ("./", "../", "/", "~")


def _model_reference(value: str, info: ValidationInfo) -> str:
    """A local folder when the value looks like a path or such a folder exists relative to the sweep
    file; otherwise a hub id (org/name) or bundled:NAME, kept as it is."""
    if is_bundled(value):
        return value
    base_dir = base_dir_of(info)
    if value in (".", "..") or value.startswith(_PATH_PREFIXES) or os.path.exists(base_dir / value):
        return absolute_path(value, base_dir)
    return value


def _database_url(value: str, info: ValidationInfo) -> str:
    """``sqlite:///relative.db`` reads the file from the sweep file's folder; ``sqlite:////abs.db``,
    ``sqlite://`` (in memory) and other databases or servers stay as they are."""
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        return value  # not a database URL (an MLflow server, ...); the preflight checks say what is wrong
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:") or os.path.isabs(database):
        return value
    return url.set(database=absolute_path(database, base_dir_of(info))).render_as_string(hide_password=False)


LocalPath = Annotated[str, AfterValidator(_local_path)]
"""A file or folder; relative to the sweep file's folder. ``bundled:NAME`` and ``scheme://`` values stay."""
ModelReference = Annotated[str, AfterValidator(_model_reference)]
"""A local model folder (relative to the sweep file's folder), a hub id or ``bundled:NAME``."""
DatabaseURL = Annotated[str, AfterValidator(_database_url)]
"""A SQLAlchemy URL (or an MLflow tracking URI); a relative SQLite file is relative to the sweep file's folder."""
