"""A Ray Tune searcher that asks an Optuna study for each new trial's parameters.

It only *suggests*: the final state of every trial is told to the study by
:class:`orchestrator.run.recorder.TrialRecorder`, which sees errors and scheduler stops that a
Ray searcher is not told about (Ray's own ``OptunaSearch`` records both as COMPLETE).
"""

from __future__ import annotations

import optuna
from ray.tune.search import Searcher

from orchestrator.search.search_space import SearchSpace


class StudySearcher(Searcher):
    def __init__(self, study: optuna.Study, space: SearchSpace, metric: str, mode: str, *, deadline=None, seed_param: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.study = study
        self.deadline = deadline
        self.seed_param = seed_param  # confirmation runs: their queued training seed travels in the config under this key
        self._space = space
        self._distributions = space.distributions()
        self.open_trials: dict[str, optuna.Trial] = {}

    def __getstate__(self) -> dict:
        # Ray Tune pickles the search algorithm into its experiment snapshot (tuner.pkl); the study
        # inside holds the database URL, password included. The searcher is never restored from
        # there (the study DB is its state), so nothing of it is written.
        return {}

    def suggest(self, trial_id: str) -> dict | str:  # type: ignore[override]  # Ray annotates dict | None, yet documents and handles Searcher.FINISHED
        if self.deadline is not None and self.deadline.passed:
            return Searcher.FINISHED  # the --timeout budget is spent: no new trials
        exhausted = getattr(self.study.sampler, "is_exhausted", None)
        if exhausted is not None and exhausted(self.study):
            return Searcher.FINISHED  # a grid search tried every point
        if self._space.conditional:
            trial = self.study.ask()
            config = self._space.sample(trial)  # define-by-run: inactive parameters are not suggested
        else:
            trial = self.study.ask(self._distributions)
            config = {**self._space.fixed, **trial.params}
        if self.seed_param is not None:
            config[self.seed_param] = trial.suggest_int(self.seed_param, 0, 2**31 - 1)
        self.open_trials[trial_id] = trial
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Nothing to do: the recorder tells the study (see the module docstring)."""

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """The study database is the searcher's state; nothing to checkpoint."""

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """The study database is the searcher's state; nothing to restore."""
