"""Confirmation: the search's top configurations trained again with new seeds, so that the
winner is the configuration that is good, not the one that drew a lucky seed.

Confirmation runs live in a study of their own beside the search's (``NAME.confirm``), so the
search's sampler and its "best" never see them. Each is a trial whose parameters are a search
trial's plus :data:`SEED_PARAM`, with the search trial's number in its ``confirms`` user
attribute. A run interrupted by a kill is queued again like any trial, so an interrupted
confirmation resumes on the next ``hpo run``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import optuna
from optuna.trial import TrialState

from orchestrator.storage.ranking import maximized, rank
from orchestrator.storage.trial_attrs import CONFIRMS, SEED_ATTR, STATE_REASON
from trials.hyperparameters import SEED_KEY

CONFIRM_SUFFIX = ".confirm"
SEED_PARAM = SEED_KEY  # the key a trial's config carries when it must train with another seed than trial.seed


def confirmation_study_name(study_name: str) -> str:
    return study_name + CONFIRM_SUFFIX


def open_confirmation_study(search: optuna.Study, seed: int | None) -> optuna.Study:
    """The study of ``search``'s confirmation runs (created on first use). Its trials are all
    queued with fixed parameters, so its sampler never proposes anything."""
    return optuna.create_study(
        study_name=confirmation_study_name(search.study_name), storage=search._storage, directions=search.directions,
        sampler=optuna.samplers.RandomSampler(seed=seed), load_if_exists=True,
    )


def confirmation_seeds(base_seed: int, seeds: int) -> list[int]:
    """Training seeds the search never used (it trained every trial with ``base_seed``)."""
    return [base_seed + offset for offset in range(1, seeds + 1)]


def _missing(search: optuna.Study, confirmation_trials: list, top_k: int, seeds: list[int]) -> list[tuple[optuna.trial.FrozenTrial, int]]:
    """(top-k search trial, seed) pairs with no confirmation run yet, in any state."""
    top = rank(search, search.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))[:top_k]
    covered = {(trial.user_attrs.get(CONFIRMS), trial.user_attrs.get(SEED_ATTR)) for trial in confirmation_trials}
    return [(trial, seed) for trial in top for seed in seeds if (trial.number, seed) not in covered]


def queue_confirmations(search: optuna.Study, confirmation: optuna.Study, top_k: int, seeds: list[int]) -> int:
    """Queue a run for every (top-k search trial, seed) pair that has none yet; return how many runs wait."""
    for trial, seed in _missing(search, confirmation.get_trials(deepcopy=False), top_k, seeds):
        confirmation.enqueue_trial({**trial.params, SEED_PARAM: seed}, user_attrs={CONFIRMS: trial.number, SEED_ATTR: seed}, skip_if_exists=False)
    return len(confirmation.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def confirmations_pending(search: optuna.Study, config) -> bool:
    """Whether the study still owes confirmation runs: pairs never run, queued, or left running by a killed invocation."""
    try:
        confirmation = optuna.load_study(study_name=confirmation_study_name(search.study_name), storage=search._storage)
        trials = confirmation.get_trials(deepcopy=False)
    except KeyError:  # no confirmation study yet
        trials = []
    unfinished = any(trial.state in (TrialState.WAITING, TrialState.RUNNING) for trial in trials)
    return unfinished or bool(_missing(search, trials, config.confirm.top_k, confirmation_seeds(config.trial.seed, config.confirm.seeds)))


@dataclass(frozen=True)
class Confirmed:
    """One search configuration and what its confirmation runs scored (the primary objective, on validation)."""

    trial: int  # the search trial's number
    search_value: float
    values: list[float]  # one per completed confirmation run
    failed: int  # confirmation runs that crashed: the configuration is not reliable

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": self.mean, "std": self.std}


def confirmed(search: optuna.Study, confirmation: optuna.Study) -> list[Confirmed]:
    """Every search configuration with at least one finished confirmation run, the chosen one
    first: no failed run, then the best mean."""
    runs: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for trial in confirmation.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if CONFIRMS in trial.user_attrs and not trial.user_attrs.get(STATE_REASON, "").startswith("interrupted"):
            runs.setdefault(trial.user_attrs[CONFIRMS], []).append(trial)
    sources = {trial.number: trial for trial in search.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    results = [
        Confirmed(number, sources[number].values[0], [t.values[0] for t in trials if t.state == TrialState.COMPLETE and t.values],
                  sum(t.state == TrialState.FAIL for t in trials))
        for number, trials in runs.items() if number in sources
    ]
    results = [result for result in results if result.values]
    sign = 1 if maximized(search) else -1
    return sorted(results, key=lambda result: (result.failed > 0, -sign * result.mean))
