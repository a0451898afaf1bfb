"""Sub-epoch fidelity: trials evaluate several times per epoch so schedulers can stop them early,
a stopped trial is an exact prefix of the full one, and no trial is stopped while it warms up."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from ray import cloudpickle
from ray.tune.schedulers import TrialScheduler

from orchestrator.api import run_sweep
from orchestrator.search.registries import SCHEDULERS
from orchestrator.sweep.config import parse_sweep
from orchestrator.sweep.sweep_sections import SchedulerConfig
from tests.conftest import encoded_tiny_data, mlflow_runs
from trials.data import stratified_rows
from trials.finetune import Hyperparameters, TrialSettings, fine_tune
from trials.result_keys import EPOCH, FINAL, INTERIM, STEP, WARMING_UP

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def tiny(tiny_model, tiny_csv):
    labels, pad, data = encoded_tiny_data(tiny_model, tiny_csv, train_size=64, val_size=60)
    settings = TrialSettings(model_path=str(tiny_model), label_names=labels, pad_token_id=pad, max_epochs=2,
                             objective="val_f1_macro", mode="max", seed=3, num_threads=1)
    return settings, data


HYPERPARAMETERS = Hyperparameters(learning_rate=5e-3, batch_size=16, unfreeze_depth=2, dropout=0.1, warmup_ratio=0.25)


def _reports(settings, data, hyperparameters=HYPERPARAMETERS, stop_after: int | None = None) -> list[dict]:
    reports: list[dict] = []

    class Stopped(Exception):
        pass

    def report(metrics, checkpoint_dir=None):
        reports.append(dict(metrics))
        if stop_after is not None and len(reports) >= stop_after:
            raise Stopped  # what a scheduler's stop does to a trial: it never trains past this report

    try:
        fine_tune(settings, hyperparameters, data, report)
    except Stopped:
        pass
    return reports


def test_evaluating_within_epochs_changes_nothing_about_training(tiny):
    settings, data = tiny
    once = _reports(settings, data)
    four = _reports(replace(settings, evals_per_epoch=4), data)

    assert [r[EPOCH] for r in once] == [1, 2]
    assert [r[EPOCH] for r in four] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert [r[STEP] for r in four] == list(range(1, 9))
    assert [r.get(INTERIM, 0) for r in four] == [1, 1, 1, 0, 1, 1, 1, 0]
    assert [r[FINAL] for r in four] == [0] * 7 + [1]
    ends = [r for r in four if not r.get(INTERIM)]
    for plain, sub in zip(once, ends, strict=True):  # the same model at each epoch's end: evaluating in between draws no randomness
        for name in ("val_loss", "val_f1_macro", "train_loss", "lr"):
            assert sub[name] == pytest.approx(plain[name], rel=1e-5, abs=1e-7), name


def test_a_stopped_trial_is_an_exact_prefix_of_the_full_one(tiny):
    settings, data = tiny
    per_step = replace(settings, max_epochs=3, evals_per_epoch=4)  # 64 rows / batch 16 = 4 steps: one report per step
    full = _reports(per_step, data)
    stopped = _reports(per_step, data, stop_after=5)

    assert len(full) == 12 and len(stopped) == 5
    assert [r["lr"] for r in stopped] == [r["lr"] for r in full[:5]]
    assert [r["val_f1_macro"] for r in stopped] == [r["val_f1_macro"] for r in full[:5]]
    # the schedule spans max_epochs: after one epoch of three the rate is still high; a one-epoch trial ends at 0
    one_epoch = _reports(replace(per_step, max_epochs=1), data)
    assert one_epoch[-1]["lr"] == 0.0 and full[3]["lr"] > 0.5 * HYPERPARAMETERS.learning_rate


def test_a_trial_reports_warming_up_until_its_warmup_ends(tiny):
    settings, data = tiny
    reports = _reports(replace(settings, evals_per_epoch=4), data)  # 8 steps in all, warmup 0.25 of them: 2 steps
    assert [r[WARMING_UP] for r in reports] == [1, 0, 0, 0, 0, 0, 0, 0]
    peak = max(r["lr"] for r in reports)
    assert reports[1]["lr"] == peak == pytest.approx(HYPERPARAMETERS.learning_rate)


def test_interim_evaluations_score_a_fixed_stratified_subset(tiny):
    settings, data = tiny
    quick = replace(settings, evals_per_epoch=2, quick_val_size=20, max_epochs=1)
    reports = _reports(quick, data)
    full = _reports(replace(quick, quick_val_size=None), data)
    assert reports[1]["val_f1_macro"] == full[1]["val_f1_macro"]  # the epoch's end scores the whole split
    assert reports[0]["val_f1_macro"] != full[0]["val_f1_macro"] or reports[0]["val_loss"] != full[0]["val_loss"]

    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    rows = stratified_rows(labels, 10)
    assert len(rows) == 10 and np.bincount(labels[rows]).tolist() == [5, 3, 2]
    assert rows.tolist() == stratified_rows(labels, 10).tolist()  # the same rows for every trial
    skewed = np.array([0] * 99 + [1])
    assert np.bincount(skewed[stratified_rows(skewed, 5)]).tolist() == [4, 1]  # a rare class keeps a row


def _scheduler(name: str, spare_warmup: bool = True):
    settings = SchedulerConfig(name=name, grace_period=0.25, reduction_factor=2, min_samples_required=1, spare_warmup=spare_warmup)
    scheduler = SCHEDULERS[name](settings, 2)
    scheduler.set_search_properties("score", "max")
    return scheduler


@dataclass(frozen=True)
class _Trial:  # what Ray's schedulers read of a trial: its id, and a hashable key
    trial_id: str


class _Controller:  # what they ask of Ray's trial runner: the trials waiting to run (none here)
    def get_live_trials(self) -> list:
        return []


RUNNER = _Controller()


def _trial(scheduler, trial_id: str):
    trial = _Trial(trial_id)
    scheduler.on_trial_add(RUNNER, trial)
    return trial


@pytest.mark.parametrize("name", ["asha", "hyperband", "median"])
def test_no_scheduler_stops_a_trial_while_it_warms_up(name):
    for spare in (True, False):
        scheduler = _scheduler(name, spare)
        good = _trial(scheduler, "good")
        for epoch in (0.25, 0.5, 0.75, 1.0):
            scheduler.on_trial_result(RUNNER, good, {EPOCH: epoch, "score": 0.9})
        scheduler.on_trial_complete(RUNNER, good, {EPOCH: 1.0, "score": 0.9})
        poor = _trial(scheduler, "poor")
        actions = []
        for epoch, warming in ((0.25, 1), (0.5, 1), (0.75, 0)):
            actions.append(scheduler.on_trial_result(RUNNER, poor, {EPOCH: epoch, "score": 0.1, WARMING_UP: warming}))
            if actions[-1] == TrialScheduler.STOP:
                break
        assert actions[-1] == TrialScheduler.STOP, (name, actions)
        assert len(actions) == (3 if spare else 1), (name, spare, actions)  # spared: stopped at its first report after warmup


SCORES = """
from trials import report

def main(config):
    for step in range(1, 9):  # two epochs, four reports each
        interim = step % 4 != 0
        # within an epoch the score is inflated: it must never become the trial's value
        report.epoch({"score": config["x"] * step / 4 + (1.0 if interim else 0.0)})
"""


@pytest.mark.slow
def test_asha_stops_poor_trials_within_their_first_epoch(ray_session, tmp_path):
    (tmp_path / "train.py").write_text(SCORES)
    raw = {
        "name": "sub-epoch", "objective": {"metric": "score", "mode": "max"},
        "trial": {"function": "train.py:main", "max_epochs": 2, "evals_per_epoch": 4},
        "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "seed_trials": [{"x": 1.0}, {"x": 0.9}, {"x": 0.2}, {"x": 0.1}],
        "budget": {"n_trials": 4, "max_concurrent": 1},
        "scheduler": {"name": "asha", "grace_period": 0.25, "reduction_factor": 2},
        "storage": {"study_db": f"sqlite:///{tmp_path / 'study.db'}", "mlflow": f"sqlite:///{tmp_path / 'mlruns.db'}",
                    "results_dir": str(tmp_path / "runs")},
    }
    config = parse_sweep(raw, tmp_path)
    run_sweep(config)
    trials = {t.params["x"]: t for t in optuna.load_study(study_name="sub-epoch", storage=config.storage.study_db).trials}

    assert trials[1.0].state == TrialState.COMPLETE
    assert trials[1.0].value == pytest.approx(2.0)  # the last epoch's end, not an inflated interim report (2.75 at step 7)
    assert sorted(trials[1.0].intermediate_values) == list(range(1, 9))  # Optuna's steps count evaluations
    for x in (0.2, 0.1):
        assert trials[x].state == TrialState.PRUNED, trials[x].user_attrs
        assert trials[x].user_attrs["state_reason"] == "stopped early after 0.25 epoch(s)"
        assert sorted(trials[x].intermediate_values) == [1]

    client, _, children = mlflow_runs(config)
    complete = next(run for run in children if run.info.status == "FINISHED" and run.data.params["x"] == "1.0")
    assert [m.step for m in client.get_metric_history(complete.info.run_id, "score")] == list(range(1, 9))
    assert {"epoch", "step", "interim", "is_final"}.isdisjoint(complete.data.metrics)


def test_the_default_grace_period_is_half_the_trial():
    assert SchedulerConfig(name="asha").grace(4) == 2.0  # bench/search_replay.py: earlier cuts lose the slow starters
    assert SchedulerConfig(name="asha", grace_period=0.25).grace(4) == 0.25
    assert SCHEDULERS["asha"](SchedulerConfig(name="asha"), 4)._brackets[0]._rungs[-1][0] == 2.0
