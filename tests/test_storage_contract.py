"""The study database's contract, run unchanged against every backend (SQLite file, PostgreSQL).

What the rest of the product relies on: our tables live beside Optuna's and migrate
idempotently; the ledger links each trial to its Optuna, Ray and MLflow ids; states and
reasons round-trip honestly; reconciliation closes what a dead invocation left open;
readers never write; concurrent writers and readers do not fail each other.
"""

from __future__ import annotations

import threading

import optuna
import pytest
import sqlalchemy as sa
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from orchestrator.errors import ConfigError
from orchestrator.reports import queries
from orchestrator.run.reconcile import INTERRUPTED, reconcile
from orchestrator.storage import db
from orchestrator.storage.ledger import Ledger
from orchestrator.storage.study import open_storage, open_study, requeue
from orchestrator.sweep.config import SweepConfig
from orchestrator.tracking.tracker import MlflowTracker

SPACE = {"lr": FloatDistribution(1e-5, 1e-2, log=True)}


@pytest.fixture
def storage(study_db_url):
    engine = db.create_engine(study_db_url)
    db.upgrade(engine)
    engine.dispose()
    return open_storage(study_db_url)


@pytest.fixture
def engine(study_db_url, storage):
    engine = db.create_engine(study_db_url)
    yield engine
    engine.dispose()


def sweep_config(name: str, study_db: str, tmp_path, **overrides) -> SweepConfig:
    raw = {
        "name": name,
        "objective": {"metric": "val_f1_macro", "mode": "max"},
        "model": "some/model",
        "data": {"source": "data.csv"},
        "search_space": {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}},
        "storage": {"study_db": study_db, "mlflow": f"sqlite:///{tmp_path / 'mlruns.db'}", "results_dir": str(tmp_path / "runs")},
        **overrides,
    }
    return SweepConfig.model_validate(raw)


def test_our_tables_migrate_idempotently_beside_optunas(engine, study_db_url, study_name):
    db.upgrade(engine)
    db.upgrade(engine)
    optuna.create_study(study_name=study_name, storage=study_db_url)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"hpo_sweeps", "hpo_invocations", "hpo_trials", "hpo_leases", "hpo_alembic_version"} <= tables
    assert {"studies", "trials", "alembic_version"} <= tables
    with engine.connect() as connection:
        ours = connection.execute(sa.text("SELECT version_num FROM hpo_alembic_version")).scalars().all()
        optunas = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    assert len(ours) == 1 and len(optunas) == 1 and ours != optunas


def test_ledger_keeps_one_sweep_row_with_a_masked_snapshot_per_name(engine, study_name, tmp_path):
    secret_url = "postgresql+psycopg://hpo:s3cret-pw@db.example:5432/hpo"
    first = Ledger(engine, study_name)
    first.start_invocation(sweep_config(study_name, secret_url, tmp_path))
    second = Ledger(engine, study_name)
    second.start_invocation(sweep_config(study_name, secret_url, tmp_path, trial={"max_epochs": 5}))
    with engine.connect() as connection:
        sweeps = connection.execute(sa.text("SELECT id, config_json, config_hash FROM hpo_sweeps WHERE name = :n"), {"n": study_name}).all()
        invocations = connection.execute(sa.text("SELECT id FROM hpo_invocations WHERE sweep_id = :s"), {"s": sweeps[0].id}).scalars().all()
    assert len(sweeps) == 1
    assert '"max_epochs": 5' in sweeps[0].config_json  # the newest config wins
    assert "s3cret-pw" not in sweeps[0].config_json and "hpo:***@db.example" in sweeps[0].config_json
    assert len(sweeps[0].config_hash) == 64
    assert sorted(invocations) == sorted([first.invocation_id, second.invocation_id])


def test_ledger_links_each_trial_to_optuna_ray_and_mlflow(engine, study_name, tmp_path):
    ledger = Ledger(engine, study_name)
    ledger.start_invocation(sweep_config(study_name, "sqlite:///x.db", tmp_path))
    ledger.trial_started(41, 3, "ray_abc", "mlflow_123", cpu=2.0, gpu=0.5, checkpoint_path="/runs/trial_abc")
    ledger.trial_finished(3, "PRUNED", "stopped early after 1 epoch(s)")
    with engine.connect() as connection:
        row = connection.execute(sa.text("SELECT * FROM hpo_trials WHERE study_name = :n"), {"n": study_name}).mappings().one()
    assert (row["optuna_trial_id"], row["optuna_trial_number"], row["ray_trial_id"], row["mlflow_run_id"]) == (41, 3, "ray_abc", "mlflow_123")
    assert (row["state"], row["state_reason"]) == ("PRUNED", "stopped early after 1 epoch(s)")
    assert (row["cpu"], row["gpu"], row["checkpoint_path"]) == (2.0, 0.5, "/runs/trial_abc")
    assert row["started_at"] <= row["ended_at"]


def test_unfinished_invocations_are_the_others_left_open(engine, study_name, tmp_path):
    config = sweep_config(study_name, "sqlite:///x.db", tmp_path)
    crashed, finished, current = Ledger(engine, study_name), Ledger(engine, study_name), Ledger(engine, study_name)
    for ledger in (crashed, finished, current):
        ledger.start_invocation(config)
    finished.end_invocation("ok")
    assert [row["id"] for row in current.unfinished_invocations()] == [crashed.invocation_id]
    current.close_invocation(crashed.invocation_id, "interrupted", "gone")
    assert current.unfinished_invocations() == []


def test_study_is_created_once_then_continued(storage, study_name, tmp_path):
    config = sweep_config(study_name, "sqlite:///unused.db", tmp_path)
    first = open_study(config, storage)
    first.tell(first.ask(SPACE), 0.5)
    again = open_study(config, storage)
    assert again._study_id == first._study_id and len(again.trials) == 1
    flipped = config.model_copy(update={"objective": config.objective.model_copy(update={"mode": "min"})})
    with pytest.raises(ConfigError, match=r"^objective\.mode: 'min' is invalid: study .* other objective directions"):
        open_study(flipped, storage)


def test_states_values_and_reasons_round_trip(storage, study_name):
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    complete, pruned, failed = study.ask(SPACE), study.ask(SPACE), study.ask(SPACE)
    for step, value in enumerate([0.2, 0.4], start=1):
        pruned.report(value, step)
    failed.set_user_attr("state_reason", "nan: val_f1_macro is nan")
    study.tell(complete, 0.7)
    study.tell(pruned, state=TrialState.PRUNED)
    study.tell(failed, state=TrialState.FAIL)
    reloaded = optuna.load_study(study_name=study_name, storage=storage).trials
    assert [t.state for t in reloaded] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert reloaded[1].intermediate_values == {1: 0.2, 2: 0.4}
    assert reloaded[2].value is None and reloaded[2].user_attrs["state_reason"] == "nan: val_f1_macro is nan"


def test_requeued_parameters_run_next_and_name_their_origin(storage, study_name):
    study = optuna.create_study(study_name=study_name, storage=storage)
    lost = study.ask(SPACE)
    study.tell(lost, state=TrialState.FAIL)
    requeue(study, study.trials[0])
    retry = study.ask(SPACE)
    assert retry.params == lost.params
    assert retry.user_attrs["retry_of"] == lost.number


def test_reconcile_closes_what_a_dead_invocation_left_open(storage, engine, study_name, tmp_path):
    config = sweep_config(study_name, "sqlite:///x.db", tmp_path)
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlruns.db'}", study_name)
    dead = Ledger(engine, study_name)
    dead.start_invocation(config)
    parent = tracker.start_run("parent", {}, {})
    dead.set_parent_run(parent)
    study = open_study(config, storage)
    orphan = study.ask(SPACE)
    child = tracker.start_run("t000", orphan.params, {}, parent_run_id=parent)
    orphan.set_user_attr("mlflow_run_id", child)
    dead.trial_started(orphan._trial_id, orphan.number, "ray_dead", child, cpu=1, gpu=0, checkpoint_path=None)

    now = Ledger(engine, study_name)
    now.start_invocation(config)
    assert reconcile(study, storage, now, tracker) == [orphan.number]

    closed, queued = study.trials
    assert closed.state == TrialState.FAIL and closed.user_attrs["state_reason"] == INTERRUPTED
    assert queued.state == TrialState.WAITING and queued.system_attrs["fixed_params"] == orphan.params
    run = tracker.client.get_run(child)
    assert run.info.status == "FAILED" and run.data.tags["hpo.state"] == "FAIL"
    assert tracker.client.get_run(parent).info.status == "KILLED"
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT state FROM hpo_trials WHERE study_name = :n"), {"n": study_name}).scalar() == "FAIL"
    assert now.unfinished_invocations() == []
    assert reconcile(study, storage, now, tracker) == []  # nothing left to close


def test_readers_never_create_a_missing_sqlite_file(tmp_path):
    missing = tmp_path / "nothing-here.db"
    with pytest.raises(ConfigError, match=r"^--db: .* no study database there"):
        queries.open_for_reading(f"sqlite:///{missing}")
    assert not missing.exists()


def test_readers_never_create_a_schema_in_an_empty_database(study_db_url, tmp_path):
    url = study_db_url
    if url.startswith("sqlite"):
        sa.create_engine(url).connect().close()  # an existing, empty SQLite file
    else:
        url = _fresh_postgres_database(url)
    with pytest.raises(ConfigError, match=r"no studies there yet"):
        queries.open_for_reading(url)
    assert sa.inspect(sa.create_engine(url, poolclass=sa.pool.NullPool)).get_table_names() == []


def _fresh_postgres_database(url: str) -> str:
    import uuid

    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"hpo_empty_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


def test_a_reader_polling_during_writes_sees_consistent_rows(storage, study_db_url, study_name):
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    study.tell(study.ask(SPACE), 0.1)
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(30):
                trial = study.ask(SPACE)
                trial.report(i / 30, 1)
                study.tell(trial, i / 30)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reader = queries.open_for_reading(study_db_url)
    polls = 0
    while not done.is_set() or polls == 0:
        rows = queries.trials(reader, study_name)
        assert all(row["state"] in {"COMPLETE", "RUNNING"} for row in rows)
        assert [row["number"] for row in rows] == list(range(len(rows)))
        polls += 1
    writer.join()
    assert not errors, errors
    assert polls > 1
    assert len(queries.trials(reader, study_name, states=["COMPLETE"])) == 31
    assert queries.best(reader, study_name)[0]["value"] == pytest.approx(29 / 30)


def test_many_concurrent_trials_stay_within_the_connection_pool(storage, study_db_url, study_name):
    """Eight threads asking and telling at once (like eight trials finishing together): no
    'database is locked', no 'too many clients', every trial recorded."""
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    postgres = not study_db_url.startswith("sqlite")
    before = _server_connections(storage) if postgres else 0  # other tests' engines keep theirs open
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                trial = study.ask(SPACE)
                study.tell(trial, 0.5)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 40
    if postgres:
        pool = storage.engine.pool
        assert pool.checkedout() == 0 and pool.size() <= 4
        assert _server_connections(storage) - before <= 4 + 4  # what eight threads added: at most our pool and its overflow


def _server_connections(storage) -> int:
    with storage.engine.connect() as connection:
        return connection.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")).scalar()
