"""Our tables, beside Optuna's in the same study database (all prefixed ``hpo_``).

- ``hpo_sweeps``: one row per study: the validated config snapshot (secrets masked) and its hash;
- ``hpo_invocations``: one row per ``hpo run``: when, where, by whom, how it ended;
- ``hpo_trials``: the trial ledger: one row per trial linking the Optuna trial, the Ray trial
  and the MLflow run, with its state and why;
- ``hpo_leases``: which invocation may run a study right now (expires if its holder dies).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Sweep(Base):
    __tablename__ = "hpo_sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    config_json: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Invocation(Base):
    __tablename__ = "hpo_invocations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("hpo_sweeps.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    host: Mapped[str] = mapped_column(String(255))
    user: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    mlflow_parent_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    exit_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class LedgerTrial(Base):
    __tablename__ = "hpo_trials"
    __table_args__ = (UniqueConstraint("study_name", "optuna_trial_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str] = mapped_column(String(512), index=True)
    invocation_id: Mapped[str] = mapped_column(ForeignKey("hpo_invocations.id"), index=True)
    optuna_trial_id: Mapped[int] = mapped_column(Integer)
    optuna_trial_number: Mapped[int] = mapped_column(Integer)
    ray_trial_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    state_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    cpu: Mapped[float] = mapped_column(Float)
    gpu: Mapped[float] = mapped_column(Float)
    checkpoint_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    restarts: Mapped[int] = mapped_column(Integer, server_default="0")  # times Ray restarted it after its worker failed
    micro_batch_size: Mapped[int | None] = mapped_column(Integer, nullable=True)  # set when out-of-memory retries shrank it
    node: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the host its worker ran on (the last, after a restart)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Lease(Base):
    __tablename__ = "hpo_leases"

    study_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    holder: Mapped[str] = mapped_column(String(36))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)  # seconds since the epoch, UTC
