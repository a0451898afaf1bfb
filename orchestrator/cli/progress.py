"""What a user watches while ``hpo run`` works, on stderr (stdout stays for results and ``--json``).

Every phase of the invocation (:mod:`orchestrator.progress.phases`: preparing the data, starting Ray,
building the frozen-layer cache, scoring on the test split, registering the model) and every
trial (its start, each epoch's score, its end with the time left) is a line. In a terminal a
live bar shows the trials running and the latest epoch, and only phases and finished trials
print; elsewhere (``nohup``, cron, CI, a pipe) every event is a plain line with the time of day,
so a log shows at once that the run is alive and where it is.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from ray.tune import Callback
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from orchestrator.answer.confirm import SEED_PARAM
from orchestrator.progress import phases
from orchestrator.reports.naming import short_params
from orchestrator.storage.trial_attrs import CONFIRMS
from orchestrator.tracking import mlflow_tags
from trials.objective import is_better
from trials.result_keys import EPOCH, INTERIM

_STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}
QUIET_START_S = 3.0
"""A phase that ends (or fails on bad input) within this many seconds prints one line, not two;
its start line shows once it has run this long, or before any other line."""
_WORKER_WAIT_NOTED_S = 5.0  # a trial that waited this long for its worker says so beside its time


def duration(seconds: float) -> str:
    """``45s``, ``4 min``, ``1 h 20 min``: as precise as a person reading a log needs."""
    if seconds < 90:
        return f"{seconds:.0f}s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class _Running:
    label: str  # "trial 3", "confirmation run 1 (trial 6, seed 2)"
    params: str  # what the search chose ("lr=3e-05 bs=16 ..."); empty for a confirmation run, which repeats its trial's
    asked: datetime  # when the study proposed it: its Optuna duration, shown in the results table, starts here
    started: float  # time.monotonic() when its worker started


class _PhaseLines(logging.Handler):
    def __init__(self, progress: SweepProgress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.phase_event(record)


class SweepProgress(Callback):
    """A Ray Tune callback for the trials and, used as a context manager, the display of the
    invocation's phases (it listens on the ``hpo.progress`` logger while the block runs)."""

    def __init__(self, console: Console | None = None, interactive: bool | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_terminal if interactive is None else interactive
        self._lock = threading.RLock()
        self._handler = _PhaseLines(self)
        self._logger_state: tuple[int, bool] | None = None
        self._pending: tuple[str, threading.Timer, float] | None = None  # a phase whose start line is not shown yet, and its start
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._recorder = None
        self._label = "search"
        self._metric = ""
        self._mode = "max"
        self._total = 0
        self._concurrency = 1
        self._fit_started = time.monotonic()
        self._best: float | None = None
        self._latest = ""
        self._running: dict[str, _Running] = {}
        self._durations: list[float] = []

    def __getstate__(self) -> dict:
        # Ray Tune pickles its callbacks with the experiment state; a live display cannot travel.
        return {}

    def __setstate__(self, state: dict) -> None:
        SweepProgress.__init__(self)

    def __enter__(self) -> SweepProgress:
        logger = phases.LOGGER
        self._logger_state = (logger.level, logger.propagate)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # shown here, not again by a root handler
        logger.addHandler(self._handler)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
        with self._lock:
            if self._pending is not None:
                self._pending[1].cancel()
                self._pending = None
        logger = phases.LOGGER
        logger.removeHandler(self._handler)
        if self._logger_state is not None:
            logger.setLevel(self._logger_state[0])
            logger.propagate = self._logger_state[1]

    # -- lines --------------------------------------------------------------------------------

    def _line(self, text: str, at: float | None = None) -> None:
        """Print one line (markup allowed; callers escape what they did not write), stamped with ``at`` (default: now)."""
        with self._lock:
            self._show_pending()
            stamp = "" if self.interactive else f"{time.strftime('%H:%M:%S', time.localtime(at))} "
            self.console.print(f"{stamp}{text}", highlight=False, soft_wrap=True)

    def _show_pending(self) -> None:
        if self._pending is not None:
            what, timer, started = self._pending
            self._pending = None
            timer.cancel()
            self._line(f"{escape(what)} ...", at=started)

    # -- phases -------------------------------------------------------------------------------

    def phase_event(self, record: logging.LogRecord) -> None:
        event, what = getattr(record, "event", None), getattr(record, "phase", None)
        with self._lock:
            pending = self._pending is not None and self._pending[0] == what
            if event == phases.START and what is not None:
                self._show_pending()
                timer = threading.Timer(QUIET_START_S, self._start_line_due, args=(what,))
                timer.daemon = True
                self._pending = (what, timer, record.created)
                timer.start()
            elif event == phases.FAIL and pending:
                self._pending[1].cancel()  # type: ignore[index]
                self._pending = None  # over quickly: the error line says it all
            elif event == phases.END and pending:
                self._pending[1].cancel()  # type: ignore[index]
                self._pending = None
                self._line(escape(self._ended(record)))
            elif event in (phases.END, phases.FAIL):
                self._line(escape(self._ended(record)))
            else:
                self._line(escape(record.getMessage()))

    @staticmethod
    def _ended(record: logging.LogRecord) -> str:
        detail = getattr(record, "detail", "")
        if record.event == phases.FAIL:  # type: ignore[attr-defined]
            return f"{record.phase}: stopped after {duration(record.seconds)} ({detail})"  # type: ignore[attr-defined]
        return f"{record.phase}: done in {duration(record.seconds)}" + (f": {detail}" if detail else "")  # type: ignore[attr-defined]

    def _start_line_due(self, what: str) -> None:
        with self._lock:
            if self._pending is not None and self._pending[0] == what:
                self._show_pending()

    # -- trials (Ray Tune callbacks) ----------------------------------------------------------

    def attach(self, recorder, n_trials: int, prepared) -> None:
        """Called before each Ray Tune run: the search's trials, then the confirmation runs."""
        self.close()
        self._recorder = recorder
        self._label = "confirmation" if getattr(recorder, "role", mlflow_tags.SEARCH_ROLE) == mlflow_tags.CONFIRM_ROLE else "search"
        self._metric = prepared.config.objective.metric
        self._mode = prepared.config.objective.mode
        self._total = n_trials
        self._concurrency = max(1, min(prepared.config.budget.max_concurrent, n_trials))
        self._fit_started = time.monotonic()
        self._best, self._latest = None, ""
        self._running, self._durations = {}, []
        if n_trials == 0:
            return  # the search is done; only the confirmation runs it owes run now
        what = f"{n_trials} trial(s)" if self._label == "search" else f"{n_trials} run(s) of the top configurations with new training seeds"
        self._line(f"{self._label}: {what}, up to {self._concurrency} at a time")
        if self.interactive:
            self._progress = Progress(
                TextColumn(f"[bold]{self._label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                TimeElapsedColumn(), console=self.console, transient=True,
            )
            self._task = self._progress.add_task(self._description(), total=n_trials)
            self._progress.start()

    def _description(self) -> str:
        best = "-" if self._best is None else f"{self._best:.4f}"
        latest = f" · {self._latest}" if self._latest else ""
        left = self._time_left()
        return escape(f"running {len(self._running)} · best {self._metric} {best}{latest}" + (f" · about {duration(left)} left" if left is not None else ""))

    def _refresh(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=len(self._durations), description=self._description())

    def _time_left(self) -> float | None:
        """Once a trial has ended: the work left (running trials' expected rest, unstarted trials) over the concurrency."""
        if not self._durations:
            return None
        mean = sum(self._durations) / len(self._durations)
        now = time.monotonic()
        unstarted = max(0, self._total - len(self._durations) - len(self._running))
        rest = sum(max(0.0, mean - (now - running.started)) for running in self._running.values())
        return (rest + unstarted * mean) / self._concurrency

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        asked = self._recorder.searcher.open_trials.get(trial.trial_id) if self._recorder is not None else None
        if asked is None or trial.trial_id in self._running:
            return
        confirms = asked.user_attrs.get(CONFIRMS)
        label = f"trial {asked.number}" if confirms is None else f"confirmation run {asked.number} (trial {confirms}, seed {trial.config.get(SEED_PARAM)})"
        params = "" if confirms is not None else short_params(asked.params)
        self._running[trial.trial_id] = _Running(label, params, asked.datetime_start or datetime.now(), time.monotonic())
        if not self.interactive:
            self._line(escape(f"{label} started" + (f": {params}" if params else "") + f" ({len(self._running)} running)"))
        self._refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        running = self._running.get(trial.trial_id)
        value = result.get(self._metric)
        if running is None or result.get(INTERIM) or not isinstance(value, (int, float)):
            return
        epoch = result.get(EPOCH, result.get("training_iteration"))
        epoch_text = f"{epoch:g}" if isinstance(epoch, (int, float)) else "?"
        self._latest = f"{running.label} epoch {epoch_text}: {value:.4f}"
        if not self.interactive:
            self._line(escape(f"{running.label} epoch {epoch_text}: {self._metric} {value:.4f}"))
        self._refresh()

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        running = self._running.get(trial.trial_id)
        if running is not None:
            self._line(escape(f"{running.label}: its worker failed; restarting it (from its last checkpoint, if any)"))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._trial_ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._trial_ended(trial)

    def _trial_ended(self, trial) -> None:
        outcome = self._recorder.outcomes.get(trial.trial_id) if self._recorder is not None else None
        if outcome is None:
            return
        # A trial whose worker never started has no start: it ended as it began.
        running = self._running.pop(trial.trial_id, None) or _Running(f"trial (Ray {trial.trial_id})", "", datetime.now(), time.monotonic())
        # The study's duration of the trial (the results table's time): from when it was proposed, its worker's start included.
        seconds = (datetime.now() - running.asked).total_seconds()
        waited = seconds - (time.monotonic() - running.started)
        self._durations.append(seconds)
        if outcome.value is not None and is_better(outcome.value, self._best, self._mode):
            self._best = outcome.value
        value = "" if outcome.value is None else f" {self._metric}={outcome.value:.4f}"
        reason = "" if outcome.state.name == "COMPLETE" else f" ({outcome.reason})"
        waiting = f", {waited:.0f}s of it starting its worker" if waited >= _WORKER_WAIT_NOTED_S else ""
        left = self._time_left()
        so_far = f" · {len(self._durations)}/{self._total} done" + (f", about {duration(left)} left" if left is not None and len(self._durations) < self._total else "")
        style = _STATE_STYLE.get(outcome.state.name, "white")
        params = f" {running.params}" if running.params else ""
        self._line(
            f"[{style}]{outcome.state.name:<8}[/{style}] {escape(running.label + value + params)} "
            f"[dim]{seconds:.0f}s{waiting}[/dim]{escape(reason)}{so_far}"
        )
        self._refresh()

    def on_experiment_end(self, trials, **info) -> None:
        self.close()
        if self._recorder is not None:
            self._line(f"{self._label}: {len(self._durations)} of {self._total} ended in {duration(time.monotonic() - self._fit_started)}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
