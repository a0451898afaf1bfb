"""Every registered sampler and scheduler: suggestions in range, seeded runs reproducible, grid
search exhaustive, parallel suggestions still model-based, and each one drives a real sweep."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from orchestrator.api import load_sweep, run_sweep
from orchestrator.errors import ConfigError
from orchestrator.search.registries import SAMPLERS
from orchestrator.search.searcher import StudySearcher
from orchestrator.storage.study import open_storage, open_study
from orchestrator.sweep.config import parse_sweep

SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "unfreeze_depth": {"type": "int", "low": 0, "high": 4},
    "batch_size": {"type": "categorical", "choices": [8, 16, 32]},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
}


def _config(tmp_path, sampler: str, name: str = "s", seed: int = 7, db: str = "study.db", startup: int = 3, **overrides):
    raw = {
        "name": name, "model": "m", "data": {"source": "d.csv"}, "search_space": SPACE,
        "sampler": {"name": sampler, "seed": seed, "n_startup_trials": startup},
        "storage": {"study_db": f"sqlite:///{tmp_path / db}"}, **overrides,
    }
    return parse_sweep(raw, tmp_path)


def _objective(params: dict) -> float:
    """A smooth function of the parameters with its optimum at lr=1e-2, depth 2, batch 16, dropout 0.1."""
    return -((math.log10(params["learning_rate"]) + 2) ** 2) - 0.1 * (params["unfreeze_depth"] - 2) ** 2 \
        - 0.05 * (params["batch_size"] != 16) - (params["dropout"] - 0.1) ** 2


def _drive(config, n: int) -> list[dict]:
    study = open_study(config, open_storage(config.storage.study_db))
    searcher = StudySearcher(study, config.search_space, "val_f1_macro", "max")
    suggested = []
    for i in range(n):
        params = searcher.suggest(f"t{i}")
        study.tell(searcher.open_trials.pop(f"t{i}"), _objective(params))
        suggested.append(params)
    return suggested


@pytest.mark.parametrize("sampler", sorted(set(SAMPLERS) - {"grid"}))
def test_each_sampler_suggests_in_range_and_reproducibly_with_a_seed(sampler, tmp_path):
    first = _drive(_config(tmp_path, sampler, db="a.db"), 8)
    again = _drive(_config(tmp_path, sampler, db="b.db"), 8)
    assert first == again
    for params in first:
        assert 1e-4 <= params["learning_rate"] <= 1e-1 and 0 <= params["unfreeze_depth"] <= 4
        assert params["batch_size"] in (8, 16, 32) and round(params["dropout"], 6) in (0.0, 0.1, 0.2, 0.3)
    assert len({tuple(sorted(p.items())) for p in first}) > 1


def _invocations(config, invocations: int, trials_each: int) -> list[tuple]:
    """Configurations of ``invocations`` runs of the same sweep, each opening the study anew as `hpo run` does."""
    suggested = []
    for _ in range(invocations):
        suggested += [tuple(sorted(params.items())) for params in _drive(config, trials_each)]
    return suggested


@pytest.mark.parametrize("sampler, startup", [("random", 3), ("tpe", 20), ("tpe", 3), ("qmc", 3), ("cmaes", 3), ("gp", 3)])
def test_a_continued_study_never_repeats_a_configuration(sampler, startup, tmp_path):
    """Five invocations of two trials each (a nightly job with a fixed seed) propose ten different
    configurations, inside and past TPE's start-up phase; on a new study the same five invocations
    propose the same ten."""
    def config(db: str):
        return _config(tmp_path, sampler, db=db, startup=startup)

    first = _invocations(config("a.db"), 5, 2)
    assert len(set(first)) == 10, first
    assert _invocations(config("b.db"), 5, 2) == first


def test_a_new_study_draws_from_the_sweep_s_seed_itself(tmp_path):
    """The seed a continued study derives does not change a new study's points: `hpo run` on a
    fresh database proposes what `sampler.seed` always proposed."""
    config = _config(tmp_path, "random")
    expected = optuna.samplers.RandomSampler(seed=7)
    study = optuna.create_study(sampler=expected)
    first = study.ask(config.search_space.distributions()).params
    assert _drive(config, 1) == [{**config.search_space.fixed, **first}]


def test_grid_search_visits_every_point_once(tmp_path):
    space = {"batch_size": {"type": "categorical", "choices": [8, 16]}, "unfreeze_depth": {"type": "int", "low": 0, "high": 2},
             "learning_rate": 1e-3, "dropout": 0.1}
    config = _config(tmp_path, "grid", search_space=space)
    study = open_study(config, open_storage(config.storage.study_db))
    searcher = StudySearcher(study, config.search_space, "val_f1_macro", "max")
    points = []
    for i in range(6):
        params = searcher.suggest(f"t{i}")
        study.tell(searcher.open_trials.pop(f"t{i}"), 0.5)
        points.append((params["batch_size"], params["unfreeze_depth"]))
    assert sorted(points) == [(b, d) for b in (8, 16) for d in (0, 1, 2)]
    assert searcher.suggest("t6") == Searcher.FINISHED  # no more trials once the grid is done


def test_grid_search_refuses_a_continuous_parameter(tmp_path):
    space = {**SPACE, "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}
    with pytest.raises(ConfigError, match=r"^search_space\.learning_rate: .* grid search needs a finite set of values; give it a step"):
        _config(tmp_path, "grid", search_space=space)


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"^sampler\.name: 'bayes' is invalid: unknown sampler; valid names are cmaes, gp, grid, nsga2, qmc, random, tpe$"):
        _config(tmp_path, "bayes")
    with pytest.raises(ConfigError, match=r"^scheduler\.name: 'pbt' is invalid: unknown scheduler; valid names are asha, fifo, hyperband, median$"):
        _config(tmp_path, "tpe", scheduler={"name": "pbt"})


def test_parallel_suggestions_after_start_up_come_from_the_model(tmp_path):
    """With four trials running at once, TPE (constant liar) still models the finished ones:
    suggestions after the start-up trials are relative samples, not random draws."""
    config = _config(tmp_path, "tpe")
    study = open_study(config, open_storage(config.storage.study_db))
    searcher = StudySearcher(study, config.search_space, "val_f1_macro", "max")
    for i in range(3):  # the start-up phase
        params = searcher.suggest(f"s{i}")
        study.tell(searcher.open_trials.pop(f"s{i}"), _objective(params))
    relative = []
    sample_relative = study.sampler.sample_relative
    study.sampler.sample_relative = lambda *args: relative.append(sample_relative(*args)) or relative[-1]
    for i in range(4):  # four concurrent trials: none has finished when the next is suggested
        searcher.suggest(f"p{i}")
    assert len(relative) == 4 and all(set(params) == set(SPACE) for params in relative)
    running = study.get_trials(states=(TrialState.RUNNING,))
    assert len({tuple(sorted(t.params.items())) for t in running}) == 4  # the liar spreads them out


SCORES = """
from trials import report

def main(config):
    for epoch in range(1, 4):
        report.epoch({"score": config["x"] * epoch})
"""
SEEDED = [1.0, 0.8, 0.6, 0.4, 0.2]
"""Values of x run first, one at a time: each trial scores below every earlier one at every epoch,
so a scheduler that compares a trial with those before it must stop the later ones."""


@pytest.mark.slow
@pytest.mark.parametrize("sampler, scheduler", [("cmaes", "hyperband"), ("gp", "median"), ("qmc", "asha"), ("grid", "fifo"), ("nsga2", "fifo")])
def test_each_sampler_and_scheduler_drives_a_sweep(ray_session, tmp_path, sampler, scheduler):
    np.random.seed(0)  # Ray's asynchronous Hyperband draws each trial's bracket from NumPy's global generator
    (tmp_path / "train.py").write_text(SCORES)
    config = parse_sweep({
        "name": f"{sampler}-{scheduler}", "objective": {"metric": "score", "mode": "max"},
        "trial": {"function": "train.py:main", "max_epochs": 3},
        "search_space": {"x": {"type": "float", "low": 0.2, "high": 1.0, "step": 0.2}, "y": {"type": "categorical", "choices": [0, 1]}},
        "seed_trials": [{"x": x, "y": 0} for x in SEEDED],
        "budget": {"n_trials": len(SEEDED) + 2, "max_concurrent": 1},
        "sampler": {"name": sampler, "seed": 0, "n_startup_trials": 2},
        "scheduler": {"name": scheduler, "grace_period": 1, "reduction_factor": 2, "min_samples_required": 1},
        "storage": {"study_db": f"sqlite:///{tmp_path / 'study.db'}", "mlflow": f"sqlite:///{tmp_path / 'mlruns.db'}",
                    "results_dir": str(tmp_path / "runs")},
    }, tmp_path)
    result = run_sweep(config)
    trials = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
    assert len(trials) == len(SEEDED) + 2 and sum(result.trials_this_run.values()) == len(trials)
    assert [trial.params["x"] for trial in trials[:len(SEEDED)]] == SEEDED
    for trial in trials:
        assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED), trial.user_attrs.get("state_reason")
        if trial.state == TrialState.COMPLETE:
            assert trial.value == pytest.approx(3 * trial.params["x"]) and sorted(trial.intermediate_values) == [1, 2, 3]
        else:  # stopped by the scheduler before its last epoch
            assert max(trial.intermediate_values) < 3
            assert trial.user_attrs["state_reason"].startswith("stopped early after"), trial.user_attrs
    pruned = [trial.params["x"] for trial in trials[:len(SEEDED)] if trial.state == TrialState.PRUNED]
    if scheduler == "fifo":
        assert not pruned  # FIFO never stops a trial
    elif scheduler == "hyperband":
        assert pruned  # the trials that share a bracket with a better one
    else:
        assert pruned == SEEDED[1:]  # every trial below the first, at its first comparison


def test_grid_search_refuses_conditional_parameters(tmp_path):
    space = {**SPACE, "learning_rate": {"type": "categorical", "choices": [1e-3, 1e-2]},
             "dropout": {"type": "categorical", "choices": [0.0, 0.1], "when": {"batch_size": [8]}}}
    with pytest.raises(ConfigError, match=r"^search_space: 'grid' is invalid: grid search needs every parameter in every trial"):
        _config(tmp_path, "grid", search_space=space)


@pytest.mark.slow
def test_a_conditional_space_drives_a_sweep(ray_session, write_sweep):
    space = {"learning_rate": {"type": "float", "low": 2e-3, "high": 1e-2, "log": True},
             "unfreeze_depth": {"type": "int", "low": 0, "high": 2},
             "layer_lr_decay": {"type": "float", "low": 0.7, "high": 1.0, "when": {"unfreeze_depth": {"min": 1}}},
             "batch_size": 16}
    config = load_sweep(write_sweep(name="conditional", search_space=space, trial={"max_epochs": 1},
                                    sampler={"name": "tpe", "seed": 0, "n_startup_trials": 2}, budget={"n_trials": 4, "max_concurrent": 2}))
    result = run_sweep(config)
    assert result.trials_this_run == {"COMPLETE": 4}
    for trial in optuna.load_study(study_name="conditional", storage=config.storage.study_db).trials:
        assert ("layer_lr_decay" in trial.params) == (trial.params["unfreeze_depth"] >= 1)
