"""The trial ledger and the invocation log: our record of who ran what, linking Optuna, Ray and MLflow."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import uuid
from datetime import datetime, timezone

import sqlalchemy
from sqlalchemy import insert, select, update

from orchestrator.secrets import mask_tree
from orchestrator.storage.db.models import Invocation, LedgerTrial, Sweep


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def config_snapshot(config) -> str:
    """The validated sweep config as JSON with every secret masked."""
    return json.dumps(mask_tree(config.model_dump(mode="json")), sort_keys=True)


class Ledger:
    def __init__(self, engine: sqlalchemy.Engine, study_name: str) -> None:
        self.engine = engine
        self.study_name = study_name
        self.invocation_id = str(uuid.uuid4())

    def start_invocation(self, config) -> str:
        """Record the sweep's config snapshot and this invocation; return the invocation id."""
        snapshot = config_snapshot(config)
        digest = hashlib.sha256(snapshot.encode()).hexdigest()
        now = _now()
        with self.engine.begin() as connection:
            sweep_id = connection.execute(select(Sweep.id).where(Sweep.name == self.study_name)).scalar()
            if sweep_id is None:
                key = connection.execute(
                    insert(Sweep).values(name=self.study_name, config_json=snapshot, config_hash=digest, created_at=now, updated_at=now)
                ).inserted_primary_key
                if key is None:
                    raise RuntimeError(f"the database returned no id for the new sweep {self.study_name!r}")
                sweep_id = key[0]
            else:
                connection.execute(update(Sweep).where(Sweep.id == sweep_id).values(config_json=snapshot, config_hash=digest, updated_at=now))
            connection.execute(insert(Invocation).values(
                id=self.invocation_id, sweep_id=sweep_id, started_at=now, host=socket.gethostname(),
                user=getpass.getuser(), pid=os.getpid(),
            ))
        return self.invocation_id

    def set_parent_run(self, run_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(update(Invocation).where(Invocation.id == self.invocation_id).values(mlflow_parent_run_id=run_id))

    def end_invocation(self, exit_status: str, reason: str | None = None) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(Invocation).where(Invocation.id == self.invocation_id).values(ended_at=_now(), exit_status=exit_status, reason=reason)
            )

    def end_if_open(self, exit_status: str, reason: str) -> tuple[bool, str | None]:
        """End this invocation unless it has ended already: (whether this call ended it, its MLflow parent run id)."""
        with self.engine.begin() as connection:
            ended = connection.execute(
                update(Invocation).where(Invocation.id == self.invocation_id, Invocation.ended_at.is_(None))
                .values(ended_at=_now(), exit_status=exit_status, reason=reason)
            ).rowcount
            parent = connection.execute(select(Invocation.mlflow_parent_run_id).where(Invocation.id == self.invocation_id)).scalar()
        return ended == 1, parent

    def trial_started(self, optuna_trial_id: int, number: int, ray_trial_id: str, mlflow_run_id: str, *, cpu: float, gpu: float, checkpoint_path: str | None) -> None:
        with self.engine.begin() as connection:
            connection.execute(insert(LedgerTrial).values(
                study_name=self.study_name, invocation_id=self.invocation_id, optuna_trial_id=optuna_trial_id,
                optuna_trial_number=number, ray_trial_id=ray_trial_id, mlflow_run_id=mlflow_run_id, state="RUNNING",
                cpu=cpu, gpu=gpu, checkpoint_path=checkpoint_path, started_at=_now(),
            ))

    def trial_finished(self, number: int, state: str, reason: str, ended_at: datetime | None = None) -> None:
        """``ended_at`` (timezone-aware): when it ended, if earlier than now (a trial closed after its invocation died)."""
        ended = ended_at.astimezone(timezone.utc).replace(tzinfo=None) if ended_at is not None else _now()
        with self.engine.begin() as connection:
            connection.execute(
                update(LedgerTrial)
                .where(LedgerTrial.study_name == self.study_name, LedgerTrial.optuna_trial_number == number)
                .values(state=state, state_reason=reason, ended_at=ended)
            )

    def trial_updated(self, number: int, **values) -> None:
        """Record a change during the trial: ``checkpoint_path``, ``micro_batch_size``, ``restarts``."""
        with self.engine.begin() as connection:
            connection.execute(
                update(LedgerTrial)
                .where(LedgerTrial.study_name == self.study_name, LedgerTrial.optuna_trial_number == number)
                .values(**values)
            )

    def checkpoint_path(self, number: int) -> str | None:
        """The last checkpoint a trial reported (where its kept best model lies), if any."""
        query = select(LedgerTrial.checkpoint_path).where(LedgerTrial.study_name == self.study_name, LedgerTrial.optuna_trial_number == number)
        with self.engine.connect() as connection:
            return connection.execute(query).scalar()

    def unfinished_invocations(self) -> list[dict]:
        """Earlier invocations of this study that never recorded an end (killed, crashed)."""
        query = (
            select(Invocation).join(Sweep, Sweep.id == Invocation.sweep_id)
            .where(Sweep.name == self.study_name, Invocation.ended_at.is_(None), Invocation.id != self.invocation_id)
        )
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def close_invocation(self, invocation_id: str, exit_status: str, reason: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(Invocation).where(Invocation.id == invocation_id).values(ended_at=_now(), exit_status=exit_status, reason=reason)
            )
