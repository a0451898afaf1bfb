"""Live progress of a sweep in the terminal: trials done / running, best so far, one line per finished trial."""

from __future__ import annotations

import time

from ray.tune import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from orchestrator.naming import short_params
from trials.objective import is_better

_STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}


class SweepProgress(Callback):
    """A Ray Tune callback that draws a progress bar on ``console`` (stderr by default)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._recorder = None
        self._metric = ""
        self._mode = "max"
        self._best: float | None = None
        self._running = 0
        self._done = 0
        self._started: dict[str, float] = {}

    def __getstate__(self) -> dict:
        # Ray Tune pickles its callbacks with the experiment state; a live display cannot travel.
        return {}

    def __setstate__(self, state: dict) -> None:
        SweepProgress.__init__(self)

    def attach(self, recorder, n_trials: int, prepared) -> None:
        self._recorder = recorder
        self._metric = prepared.config.objective.metric
        self._mode = prepared.config.objective.mode
        self._progress = Progress(
            TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
            TimeElapsedColumn(), console=self.console, transient=True,
        )
        self._task = self._progress.add_task(self._description(), total=n_trials)
        self._progress.start()

    def _description(self) -> str:
        best = "-" if self._best is None else f"{self._best:.4f}"
        return f"running {self._running} · best {self._metric} {best}"

    def _refresh(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self._done, description=self._description())

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._running += 1
        self._started[trial.trial_id] = time.monotonic()
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._trial_ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._trial_ended(trial)

    def _trial_ended(self, trial) -> None:
        self._running = max(0, self._running - 1)
        self._done += 1
        outcome = self._recorder.outcomes.get(trial.trial_id) if self._recorder else None
        if outcome is not None:
            if outcome.value is not None and is_better(outcome.value, self._best, self._mode):
                self._best = outcome.value
            seconds = time.monotonic() - self._started.pop(trial.trial_id, time.monotonic())
            value = "" if outcome.value is None else f"{self._metric}={outcome.value:.4f} "
            reason = "" if outcome.state.name == "COMPLETE" else f" [dim]({outcome.reason})[/dim]"
            style = _STATE_STYLE.get(outcome.state.name, "white")
            self.console.print(
                f"[{style}]{outcome.state.name:<8}[/{style}] {value}{short_params(trial.config)} [dim]{seconds:.0f}s[/dim]{reason}",
                highlight=False,
                soft_wrap=True,
            )
        self._refresh()

    def on_experiment_end(self, trials, **info) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
