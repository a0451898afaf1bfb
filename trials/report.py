"""The one reporting surface of a trial: each epoch's metrics (and a checkpoint) go to Ray Tune,
and a restarted trial finds its last checkpoint.

The built-in fine-tuning reports through :func:`ray_tune_report`. A training function of your
own (the sweep's ``trial.function``) needs two calls::

    from trials import report

    def main(config):                                    # config: the sampled parameters
        with report.restored_checkpoint() as folder:     # None unless Ray restarted this trial
            state = load_state(folder) if folder else new_state()
        for _ in range(config["epochs"]):
            score = train_one_epoch(state, config["learning_rate"])
            with tempfile.TemporaryDirectory() as folder:
                save_state(state, folder)
                report.epoch({"score": score}, checkpoint_dir=folder)

A trial ends at ``trial.max_epochs`` epochs or by early-stopping patience: ``report.should_stop()``
then says so, and a further ``report.epoch()`` ends the function. With ``trial.evals_per_epoch: N``
each call reports 1/N of an epoch (evaluate N times per epoch, evenly spaced): the sweep's
schedulers then see fractions of an epoch, and patience and the trial's value count only every
Nth report (the end of an epoch). Outside a sweep these calls do nothing, so the same function
also runs on its own.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trials.objective import Mode
from trials.result_keys import EPOCH, FINAL, FROZEN_CACHE, INTERIM, STEP
from trials.stopping import EarlyStopping

_NO_CACHE = "off: trial.function trains its own model"  # the frozen-layer cache is the built-in loop's


class TrialStopped(BaseException):
    """Raised by :func:`epoch` when the trial already reported its last epoch (``trial.max_epochs``
    or early-stopping patience; see :func:`should_stop`); the sweep ends the function there. A
    BaseException, like KeyboardInterrupt, so that ``except Exception`` in a training loop lets it through."""


def epoch(metrics: Mapping[str, float], *, checkpoint_dir: str | os.PathLike | None = None, final: bool = False) -> None:
    """Report one evaluation's metrics (numbers by name) to the sweep; every report must include
    the sweep's objective metric(s). Epochs (and their fractions) are counted for you.

    ``checkpoint_dir``: a folder with your training state after this epoch, copied before this
    returns; :func:`restored_checkpoint` hands it back if the trial is restarted.
    ``final``: this is the trial's last epoch (set for you at ``trial.max_epochs``).
    """
    session = _session
    if session is None:
        return
    session.report(metrics, checkpoint_dir, final)


def should_stop() -> bool:
    """True once this trial has reported its last epoch (``trial.max_epochs`` or early-stopping
    patience): a training loop can stop there instead of training an epoch the sweep discards."""
    return _session is not None and _session.ended


@contextmanager
def restored_checkpoint() -> Iterator[Path | None]:
    """The folder of the latest checkpoint of this trial when Ray restarted it after a failure, else None."""
    from ray import tune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # outside a trial Ray warns, then returns None
        checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as folder:
        yield Path(folder)


_STOP_GRACE_S = "60"


def allow_slow_stop() -> None:
    """Let a stopped trial take up to a minute to wind down before Ray reuses its worker.

    Ray hands a worker to the next trial only if the stopped trial's thread ends within
    ``TUNE_FUNCTION_THREAD_TIMEOUT_S`` (2 s by default), read in the worker at that moment;
    otherwise the *next* trial fails ("Trainable runner reuse requires reset_config()"). Freeing
    a model on a busy machine can take longer than 2 s. The wait ends as soon as the thread does.
    """
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", _STOP_GRACE_S)


def ray_tune_report(metrics: dict, checkpoint_dir: str | os.PathLike | None = None, metadata: dict | None = None) -> None:
    """Report ``metrics`` to the Ray Tune session this trial runs in; ``checkpoint_dir`` (if
    given) is copied to the run's storage before this returns, with ``metadata`` beside it."""
    from ray import tune

    checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    if checkpoint is not None and metadata:
        checkpoint.set_metadata(metadata)
    tune.report(metrics, checkpoint=checkpoint)


@dataclass
class _Session:
    """The reports of one trial of a training function of your own."""

    max_epochs: int
    objectives: tuple[str, ...]  # the sweep's objective metrics, primary first
    stopping: EarlyStopping
    evals_per_epoch: int = 1
    step: int = 0  # reports so far
    last: dict | None = None
    ended: bool = False

    def report(self, metrics: Mapping[str, float], checkpoint_dir, final: bool) -> None:
        if self.ended:
            raise TrialStopped(f"the trial reported its last epoch ({self.epoch})")
        values = _numbers(metrics)
        missing = [name for name in self.objectives if name not in values]
        if missing:
            raise ValueError(f"report.epoch() got no {', '.join(missing)} (it got {', '.join(values) or 'nothing'}); "
                             "every report must include the sweep's objective metric")
        self.step += 1
        end_of_epoch = self.step % self.evals_per_epoch == 0
        stop = end_of_epoch and self.stopping.update(values[self.objectives[0]])
        self.ended = stop or final or self.step >= self.max_epochs * self.evals_per_epoch
        self.last = values
        state = {STEP: self.step, "best": self.stopping.best, "stale_epochs": self.stopping.stale_epochs}
        ray_tune_report({**values, **self._position(), FINAL: int(self.ended), FROZEN_CACHE: _NO_CACHE}, checkpoint_dir, state)

    @property
    def epoch(self) -> float:
        return self.step / self.evals_per_epoch if self.evals_per_epoch > 1 else self.step

    def _position(self) -> dict:
        interim = self.step % self.evals_per_epoch != 0
        return {EPOCH: self.epoch, STEP: self.step, **({INTERIM: 1} if interim else {})}

    def close(self, returned: object) -> None:
        """The function returned: a mapping it returned is its last epoch; otherwise its last report
        is repeated as final, so the trial counts as complete rather than stopped early."""
        if self.ended:
            return
        if isinstance(returned, Mapping):
            self.report(returned, None, final=True)
        elif self.last is not None:
            ray_tune_report({**self.last, **self._position(), FINAL: 1, FROZEN_CACHE: _NO_CACHE})


_session: _Session | None = None


@contextmanager
def user_trial(max_epochs: int, objectives: tuple[str, ...], mode: Mode, patience: int | None,
               evals_per_epoch: int = 1) -> Iterator[_Session]:
    """Make :func:`epoch` report to this trial while a training function of your own runs; a
    restarted trial continues its report count and early-stopping state from its checkpoint."""
    global _session
    session = _Session(max_epochs, tuple(objectives), EarlyStopping(mode, patience), evals_per_epoch)
    from ray import tune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpoint = tune.get_checkpoint()
    saved = checkpoint.get_metadata() if checkpoint is not None else {}
    if STEP in saved:
        session.step = int(saved[STEP])
        session.stopping.best = float(saved.get("best", math.nan))
        session.stopping.stale_epochs = int(saved.get("stale_epochs", 0))
    _session = session
    try:
        yield session
    finally:
        _session = None


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise TypeError(f"report.epoch() takes a mapping of metric names to numbers, got {type(metrics).__name__}")
    values = {}
    for name, value in metrics.items():
        try:
            values[str(name)] = float(value)  # also numpy scalars and one-element tensors
        except (TypeError, ValueError):
            raise ValueError(f"metric {name!r} is {value!r}, not a number; report numbers only") from None
    return values
