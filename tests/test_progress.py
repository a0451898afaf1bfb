"""What a user watching `hpo run` sees: a line for each phase and each trial's start, epochs and end,
with the time left, as plain lines on stderr when there is no terminal (nohup, cron, CI)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from rich.console import Console

from orchestrator.cli import progress
from orchestrator.cli.progress import SweepProgress
from orchestrator.errors import ConfigError
from orchestrator.progress import phases

HPO = str(Path(sys.executable).parent / "hpo")
STAMP = r"\d\d:\d\d:\d\d "


def _watching(monkeypatch, quiet_s: float = progress.QUIET_START_S) -> tuple[SweepProgress, io.StringIO]:
    monkeypatch.setattr(progress, "QUIET_START_S", quiet_s)
    buffer = io.StringIO()
    return SweepProgress(Console(file=buffer, width=80), interactive=False), buffer


def test_a_short_phase_is_one_line_with_its_result(monkeypatch):
    display, buffer = _watching(monkeypatch)
    with display, phases.phase("building the frozen-layer cache") as step:
        step.detail = "boundaries 4,5 of 6 layers; 12 MB"
    (line,) = buffer.getvalue().splitlines()
    assert re.fullmatch(STAMP + r"building the frozen-layer cache: done in 0s: boundaries 4,5 of 6 layers; 12 MB", line), line


def test_a_long_phase_says_when_it_starts_and_when_it_ends(monkeypatch):
    display, buffer = _watching(monkeypatch, quiet_s=0.05)
    with display, phases.phase("preparing the model and data"):
        time.sleep(0.5)  # the start line shows while the phase still runs
        assert buffer.getvalue().splitlines()[-1].endswith("preparing the model and data ...")
    assert [line[9:] for line in buffer.getvalue().splitlines()] == ["preparing the model and data ...", "preparing the model and data: done in 1s"]


def test_bad_input_found_early_in_a_phase_leaves_the_error_as_the_only_line(monkeypatch):
    display, buffer = _watching(monkeypatch)
    with pytest.raises(ConfigError), display, phases.phase("preparing the model and data"):
        raise ConfigError("data.source", "x.csv", "no such file")
    assert buffer.getvalue() == ""


def test_a_phase_starting_inside_another_shows_the_outer_one_first(monkeypatch):
    display, buffer = _watching(monkeypatch)
    with display, phases.phase("outer"), phases.phase("inner"):
        pass
    assert [line[9:] for line in buffer.getvalue().splitlines()] == ["outer ...", "inner: done in 0s", "outer: done in 0s"]


def test_the_logger_is_left_as_it_was(monkeypatch):
    before = (phases.LOGGER.level, phases.LOGGER.propagate, list(phases.LOGGER.handlers))
    display, _ = _watching(monkeypatch)
    with display:
        assert phases.LOGGER.handlers and not phases.LOGGER.propagate
    assert (phases.LOGGER.level, phases.LOGGER.propagate, list(phases.LOGGER.handlers)) == before


def test_time_left_counts_running_and_unstarted_trials_over_the_concurrency(monkeypatch):
    display, _ = _watching(monkeypatch)
    display._total, display._concurrency, display._durations = 8, 2, [60.0]
    display._running = {"a": progress._Running("trial 1", "", None, time.monotonic() - 20)}  # type: ignore[arg-type]
    assert display._time_left() == pytest.approx((40 + 6 * 60) / 2, abs=1)
    assert progress.duration(45) == "45s" and progress.duration(200) == "3 min" and progress.duration(4900) == "1 h 22 min"


@pytest.mark.slow
def test_a_sweep_without_a_terminal_prints_every_phase_and_trial_as_it_happens(write_sweep, tmp_path):
    """`hpo run` as under nohup: stderr is a file. A line for each phase, each trial's start and epoch,
    each end with the time left; the trial's time is the one the results table (the study) shows."""
    path = write_sweep(
        trial={"max_epochs": 2}, budget={"n_trials": 3, "max_concurrent": 2}, confirm={"top_k": 1, "seeds": 1},
        data={"train_size": 300, "val_size": 100, "test_size": 100}, registered_model="tiny-watched",
    )
    started = time.monotonic()
    with open(tmp_path / "stderr.log", "w+") as log:  # a file, as nohup's
        done = subprocess.run([HPO, "run", str(path), "--json"], stdout=subprocess.PIPE, stderr=log, text=True, timeout=600,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        log.seek(0)
        lines = log.read().splitlines()

    assert done.returncode == 0, "\n".join(lines[-40:])
    result = json.loads(done.stdout)  # stdout holds the JSON document and nothing else
    assert result["ok"] and time.monotonic() - started < 600
    text = "\n".join(lines)
    assert all(re.match(STAMP, line) for line in lines), text  # every line says when
    expected_in_order = [
        r"preparing the model and data(: done in \d+s: 300 train, 100 validation, 100 test rows| \.\.\.)",
        r"starting Ray on this machine",
        r"building the frozen-layer cache(: done in \d+s: boundaries| \.\.\.)",
        r"search: 3 trial\(s\), up to 2 at a time",
        r"trial \d started: lr=",  # trials 0 and 1 start together: either may be first
        r"trial \d epoch 1: val_f1_macro 0\.\d{4}",
        r"trial \d epoch 2: val_f1_macro",
        r"COMPLETE trial \d val_f1_macro=0\.\d{4} .* · 1/3 done, about \S+( min)? left",
        r"COMPLETE trial \d .* · 3/3 done$",
        r"search: 3 of 3 ended in ",
        r"confirmation: 1 run\(s\) of the top configurations with new training seeds, up to 1 at a time",
        r"confirmation run 0 \(trial \d, seed 1\) started",
        r"confirmation run 0 \(trial \d, seed 1\) epoch 2: val_f1_macro",
        r"COMPLETE confirmation run 0 \(trial \d, seed 1\) val_f1_macro=",
        r"scoring the chosen configuration \(trial \d\) on the test split, 100 rows",
        r"registering the chosen model as tiny-watched",
    ]
    position = 0
    for pattern in expected_in_order:
        found = next((i for i in range(position, len(lines)) if re.search(pattern, lines[i][9:])), None)
        assert found is not None, f"no line matching {pattern!r} after line {position}:\n{text}"
        position = found + 1

    # The time a trial's end line shows is its duration in the study: the results table's time.
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'study.db'}")
    for trial in study.get_trials():
        (line,) = [line for line in lines if re.search(rf"COMPLETE +trial {trial.number} ", line)]
        shown = int(re.search(r" (\d+)s(,| ·|$)", line).group(1))  # type: ignore[union-attr]
        assert abs(shown - trial.duration.total_seconds()) <= 1.5, (line, trial.duration)


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id, self.config = trial_id, {}


@pytest.mark.parametrize("interactive", [False, True])
def test_trials_are_shown_in_a_terminal_and_without_one(monkeypatch, interactive):
    """The same callbacks Ray Tune calls, on a real study and recorder-like bookkeeping; in a terminal the
    bar carries starts and epochs, and finished trials and phases still print as lines."""
    from types import SimpleNamespace

    from orchestrator.run.outcome import Outcome

    study = optuna.create_study(direction="maximize")
    asked = {"a": study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})}
    outcomes: dict = {}
    recorder = SimpleNamespace(searcher=SimpleNamespace(open_trials=asked), outcomes=outcomes, role="search")
    prepared = SimpleNamespace(config=SimpleNamespace(objective=SimpleNamespace(metric="val_f1_macro", mode="max"), budget=SimpleNamespace(max_concurrent=2)))
    buffer = io.StringIO()
    display = SweepProgress(Console(file=buffer, width=120, force_terminal=interactive), interactive=interactive)
    with display:
        display.attach(recorder, 2, prepared)
        display.on_trial_start(0, [], _Trial("a"))
        display.on_trial_result(0, [], _Trial("a"), {"val_f1_macro": 0.5, "epoch": 1})
        outcomes["a"] = Outcome(optuna.trial.TrialState.COMPLETE, 0.5, "ran to its end")
        display.on_trial_complete(0, [], _Trial("a"))
        with phases.phase("scoring"):
            pass
        display.on_experiment_end([])
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buffer.getvalue())
    assert "search: 2 trial(s), up to 2 at a time" in shown and "COMPLETE trial 0 val_f1_macro=0.5000 lr=" in shown
    assert "1/2 done, about " in shown and "scoring: done in 0s" in shown and "search: 1 of 2 ended in " in shown
    assert ("trial 0 epoch 1: val_f1_macro 0.5000" in shown) is not interactive  # a terminal shows epochs in the bar
