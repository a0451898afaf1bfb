"""The study lease, against both backends: one holder at a time, and a dead holder's lease expires."""

from __future__ import annotations

import time

import pytest

from orchestrator.errors import StudyLockedError
from orchestrator.storage import db
from orchestrator.storage.lease import StudyLease


@pytest.fixture
def engine(study_db_url):
    engine = db.create_engine(study_db_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


def test_second_holder_is_refused_until_release(engine):
    first = StudyLease(engine, "s-release", holder="a")
    first.acquire()
    second = StudyLease(engine, "s-release", holder="b")
    with pytest.raises(StudyLockedError, match="being run by another hpo invocation") as raised:
        second.acquire()
    assert raised.value.exit_code == 3
    assert StudyLease(engine, "other-study", holder="b")._try_acquire()  # leases are per study
    first.release()
    second.acquire()
    assert second.current()["holder"] == "b"
    second.release()
    assert second.current() is None


def test_expired_lease_of_a_dead_holder_is_taken_over(engine):
    dead = StudyLease(engine, "s-expire", holder="dead", ttl_s=0.5)
    assert dead._try_acquire()  # acquired, never renewed: its process "died"
    waiting = StudyLease(engine, "s-expire", holder="next", ttl_s=30)
    started = time.monotonic()
    waiting.acquire(wait_s=10)
    assert time.monotonic() - started < 5
    assert waiting.current()["holder"] == "next"
    waiting.release()


def test_live_holder_keeps_its_lease_by_renewing(engine):
    live = StudyLease(engine, "s-renew", holder="live", ttl_s=0.6)
    live.acquire()
    time.sleep(1.5)  # longer than the ttl: only renewal keeps it
    with pytest.raises(StudyLockedError):
        StudyLease(engine, "s-renew", holder="other").acquire()
    live.release()


def test_lease_of_a_dead_process_on_this_host_is_taken_at_once(engine):
    import subprocess
    import sys

    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    dead = StudyLease(engine, "s-dead-pid", holder="dead", ttl_s=3600)
    assert dead._try_acquire()
    with engine.begin() as connection:
        import sqlalchemy as sa

        connection.execute(sa.text("UPDATE hpo_leases SET pid = :pid WHERE holder = 'dead'"), {"pid": int(dead_pid)})
    taker = StudyLease(engine, "s-dead-pid", holder="taker")
    taker.acquire()  # no wait: the holder's process is gone
    assert taker.current()["holder"] == "taker"
    taker.release()
