"""Warm starts: seed points run first (once per study), continuing a study keeps its history,
and a search space that changed incompatibly is refused until --new-study."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from orchestrator.api import load_sweep, run_sweep
from orchestrator.cli import app
from orchestrator.errors import ConfigError
from orchestrator.run.runner import RunOptions
from orchestrator.sweep.config import parse_sweep
from tests.conftest import TINY_SPACE

SEED = {"learning_rate": 5e-3, "batch_size": 8, "unfreeze_depth": 1, "dropout": 0.05}


def _raw(tmp_path, **overrides) -> dict:
    return {"name": "w", "model": "m", "data": {"source": "d.csv"}, "search_space": TINY_SPACE,
            "storage": {"study_db": f"sqlite:///{tmp_path / 'w.db'}"}, **overrides}


@pytest.mark.parametrize("points, message", [
    ([SEED, {"learning_rate": 0.5}], r"^seed_trials\[1\]\.learning_rate: 0\.5 is invalid: outside the search space \(0\.002\.\.0\.01\)"),
    ([{"batch_size": 12}], r"^seed_trials\[0\]\.batch_size: 12 is invalid: outside the search space \(one of \[8, 16\]\)"),
    ([{"warmup_ratio": 0.1}], r"^seed_trials\[0\]\.warmup_ratio: 0\.1 is invalid: not a searched parameter; searched parameters are learning_rate"),
    ([{"weight_decay": 0.1}], r"^seed_trials\[0\]\.weight_decay: .* it is fixed in the search space"),
    ([{"unfreeze_depth": "two"}], r"^seed_trials\[0\]\.unfreeze_depth: 'two' is invalid: outside the search space"),
    ([[1, 2]], r"^seed_trials\.0: .*"),
])
def test_seed_points_outside_the_space_are_refused(tmp_path, points, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep(_raw(tmp_path, seed_trials=points), tmp_path)


def test_enqueue_file_is_validated_before_anything_runs(write_sweep, tmp_path):
    path = write_sweep(name="enq-bad")
    points = tmp_path / "points.yaml"
    points.write_text(yaml.safe_dump([{"learning_rate": 1.0}]))
    result = CliRunner().invoke(app, ["run", str(path), "--enqueue", str(points)])
    assert result.exit_code == 2
    assert "--enqueue[0].learning_rate: 1.0 is invalid: outside the search space" in result.output
    assert not (tmp_path / "study.db").exists()


@pytest.mark.slow
def test_seeds_run_first_once_and_incompatible_spaces_need_a_new_study(ray_session, write_sweep, tmp_path):
    path = write_sweep(name="warm", seed_trials=[SEED], trial={"max_epochs": 1}, budget={"n_trials": 2, "max_concurrent": 1})
    config = load_sweep(path)
    first = run_sweep(config)
    assert "queued 1 seed point(s) to run first" in first.notes
    again = run_sweep(config, RunOptions(n_trials=1))  # the nightly rerun does not queue the seed again
    assert [note for note in again.notes if not note.startswith("warning:")] == []  # nothing queued again (the tiny data's train/test overlap is warned about)
    trials = optuna.load_study(study_name="warm", storage=config.storage.study_db).trials
    assert len(trials) == 3 and trials[0].params == SEED
    assert [t.params for t in trials].count(SEED) == 1

    narrowed = load_sweep(write_sweep(name="warm", search_space={**TINY_SPACE, "batch_size": {"type": "categorical", "choices": [8, 32]}},
                                      trial={"max_epochs": 1}))
    engine = sa.create_engine(config.storage.study_db)
    with engine.connect() as connection:
        invocations = connection.execute(sa.text("SELECT count(*) FROM hpo_invocations")).scalar()
    with pytest.raises(ConfigError, match=r"^search_space: 'batch_size \(choices \[8, 16\] -> choices \[8, 32\]\)' is invalid: .* pass --new-study"):
        run_sweep(narrowed)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM hpo_invocations")).scalar() == invocations  # nothing written
    engine.dispose()

    versioned = run_sweep(narrowed, RunOptions(n_trials=1, new_study=True))
    assert versioned.study_name == "warm-v2"
    assert len(optuna.load_study(study_name="warm-v2", storage=config.storage.study_db).trials) == 1

    widened = load_sweep(write_sweep(name="warm", search_space={**TINY_SPACE, "learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True}},
                                     trial={"max_epochs": 1}))
    run_sweep(widened, RunOptions(n_trials=1))  # a wider range is compatible: the study continues
    assert len(optuna.load_study(study_name="warm", storage=config.storage.study_db).trials) == 4
