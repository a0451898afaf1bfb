"""The confirmation phase of an invocation: queue the top configurations' runs with new seeds
(:mod:`orchestrator.answer.confirm`) and run them through Ray Tune like any trials, recorded in the
confirmation study, the ledger and MLflow (child runs tagged ``hpo.role = confirm``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from orchestrator.answer.confirm import (
    SEED_PARAM,
    confirmation_seeds,
    confirmation_study_name,
    open_confirmation_study,
    queue_confirmations,
)
from orchestrator.tracking import mlflow_tags


class Confirmation:
    def __init__(self, config, prepared, study, *, ledger, tracker, parent_run_id: str, deadline, dataset_inputs: tuple = ()) -> None:
        from orchestrator.run.reconcile import reconcile
        from orchestrator.run.recorder import TrialRecorder
        from orchestrator.search.searcher import StudySearcher
        from orchestrator.storage.ledger import Ledger

        self.config, self.prepared, self.deadline, self.search = config, prepared, deadline, study
        self.study = open_confirmation_study(study, config.sampler.seed)
        self.ledger = Ledger(ledger.engine, confirmation_study_name(config.name))
        self.ledger.start_invocation(config)
        self.ledger.set_parent_run(parent_run_id)
        self.reconciled = reconcile(self.study, study._storage, self.ledger, tracker)  # runs a killed invocation left open
        self.searcher = StudySearcher(self.study, config.search_space, config.objective.metric, config.objective.mode, deadline=deadline, seed_param=SEED_PARAM)
        self.keep_models = prepared.test is not None or config.registered_model is not None
        self.recorder = TrialRecorder(self.searcher, tracker, parent_run_id, metric=config.objective.metric, mode=config.objective.mode, ledger=self.ledger,
                                      resources=config.resources, keep_best_model=self.keep_models, role=mlflow_tags.CONFIRM_ROLE,
                                      dataset_inputs=dataset_inputs)

    def run(self, options, stop, results_dir: Path) -> list[str]:
        """Run every queued confirmation run; return notes for the user."""
        from orchestrator.run.tuning import fit

        seeds = confirmation_seeds(self.config.trial.seed, self.config.confirm.seeds)
        waiting = queue_confirmations(self.search, self.study, self.config.confirm.top_k, seeds)
        if not waiting:
            return []
        for callback in options.callbacks:
            if hasattr(callback, "attach"):
                callback.attach(self.recorder, waiting, self.prepared)
        fit(self.prepared, self.searcher, self.recorder, waiting, stoppers=[stop, self.deadline], callbacks=options.callbacks, trial_function=options.trial_function,
            keep_best_model=self.keep_models, results_dir=results_dir, label="confirm")
        counts = Counter(outcome.state.name for outcome in self.recorder.outcomes.values())
        return [f"confirmation: {waiting} run(s) of the top {self.config.confirm.top_k} configurations with seeds {seeds}: "
                + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))]

    def close(self, reason: str, exit_status: str) -> None:
        self.recorder.close_open_trials(reason)
        self.ledger.end_invocation(exit_status, None)
