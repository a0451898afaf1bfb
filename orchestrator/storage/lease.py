"""One invocation at a time per study: a lease row in the study database, renewed while held.

The lease expires ``ttl_s`` after its last renewal (``HPO_LEASE_TTL_S``, default 60), so a
holder that was killed cannot keep the study locked; hosts sharing a database need roughly
synchronised clocks (NTP). A holder on this same host whose process is gone is replaced at once.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import sqlalchemy
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from orchestrator.errors import StudyLockedError
from orchestrator.storage.db.models import Lease
from orchestrator.storage.study import sqlite_file


class StudyLease:
    def __init__(self, engine: sqlalchemy.Engine, study_name: str, holder: str, ttl_s: float | None = None) -> None:
        self.engine = engine
        self.study_name = study_name
        self.holder = holder
        self.ttl_s = ttl_s if ttl_s is not None else float(os.environ.get("HPO_LEASE_TTL_S", "60"))
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self, wait_s: float = 0.0) -> None:
        """Take the lease, waiting up to ``wait_s`` seconds; raise :class:`StudyLockedError` if another holds it."""
        deadline = time.monotonic() + wait_s
        while not self._try_acquire():
            if time.monotonic() >= deadline:
                raise StudyLockedError(self.study_name, self.current())
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
        self._renewer = threading.Thread(target=self._renew_until_released, name="hpo-lease", daemon=True)
        self._renewer.start()

    def _try_acquire(self) -> bool:
        now = time.time()
        values = {"holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(), "expires_at": now + self.ttl_s}
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(Lease).values(study_name=self.study_name, **values))
            return True
        except IntegrityError:
            pass
        takeover = (Lease.expires_at < now) | (Lease.holder == self.holder)
        current = self.current()
        if current and current["host"] == socket.gethostname() and not _alive(current["pid"]):
            takeover = takeover | (Lease.holder == current["holder"])
        with self.engine.begin() as connection:
            taken = connection.execute(update(Lease).where(Lease.study_name == self.study_name).where(takeover).values(**values))
        return taken.rowcount == 1

    def held_by_another(self) -> dict | None:
        """The live holder other than us, if any. Read-only: safe before our tables exist."""
        sqlite_path = sqlite_file(self.engine.url.render_as_string(hide_password=False))
        if sqlite_path is not None and not sqlite_path.exists():
            return None  # connecting would create the file
        try:
            current = self.current()
        except sqlalchemy.exc.SQLAlchemyError:  # no hpo_leases table yet: nobody holds anything
            return None
        if current is None or current["holder"] == self.holder or current["expires_at"] < time.time():
            return None
        if current["host"] == socket.gethostname() and not _alive(current["pid"]):
            return None
        return current

    def current(self) -> dict | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(Lease).where(Lease.study_name == self.study_name)).mappings().first()
        return dict(row) if row else None

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                with self.engine.begin() as connection:
                    connection.execute(
                        update(Lease)
                        .where(Lease.study_name == self.study_name, Lease.holder == self.holder)
                        .values(expires_at=time.time() + self.ttl_s)
                    )
            except sqlalchemy.exc.SQLAlchemyError:
                pass  # a passing database error; the next renewal retries well before expiry

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        with self.engine.begin() as connection:
            connection.execute(delete(Lease).where(Lease.study_name == self.study_name, Lease.holder == self.holder))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
