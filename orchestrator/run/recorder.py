"""One place that records each trial's progress and final state in the study and in MLflow.

A Ray Tune callback on the driver. For every trial it opens an MLflow child run, reports
each epoch as an Optuna intermediate value and as MLflow metrics, and at the end classifies
the trial once (:func:`orchestrator.run.outcome.classify`) and writes that state to both stores,
so the study and MLflow always agree.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import cloudpickle
import optuna
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS, HOSTNAME

from orchestrator.answer.confirm import SEED_PARAM
from orchestrator.progress import failpoints
from orchestrator.reports.naming import confirmation_run_name, run_name
from orchestrator.run.outcome import Outcome, classify
from orchestrator.search.searcher import StudySearcher
from orchestrator.storage.ledger import Ledger
from orchestrator.storage.study import requeue
from orchestrator.storage.trial_attrs import CONFIRMS, MLFLOW_RUN_ID, RAY_TRIAL_ID, STATE_REASON
from orchestrator.tracking import mlflow_tags
from orchestrator.tracking.best_model import KeptModel
from orchestrator.tracking.dataset_inputs import log_dataset_inputs
from orchestrator.tracking.tracker import MlflowTracker
from trials.objective import Mode, is_better
from trials.result_keys import BOOKKEEPING, EPOCH, FINAL, FROZEN_CACHE, INTERIM, STEP
from trials.trial_files import BEST_MODEL_FILE

# Keys of a result that are not metrics: Ray Tune's bookkeeping, the trial's position and flags
# (trials.result_keys) and micro_batch_size (recorded as a tag).
_NOT_METRICS = frozenset({*AUTO_RESULT_KEYS, *DEBUG_METRICS, *BOOKKEEPING, "done", "trial_id", "experiment_tag", "micro_batch_size"})


def reported_metrics(result: dict) -> dict[str, float]:
    """The numbers a trial reported in one result, by name."""
    return {
        name: float(value) for name, value in result.items()
        if name not in _NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def error_summary(trial: Trial) -> str:
    """One line naming the exception a trial died of.

    Read from the trial's local error files: ``Trial.get_error`` reads the synced copy in
    storage, which does not exist yet when ``on_trial_error`` runs.
    """
    pickled = trial.pickled_error_file
    if pickled and Path(pickled).is_file():
        with open(pickled, "rb") as handle:
            error = cloudpickle.load(handle)
        cause = error.as_instanceof_cause() if hasattr(error, "as_instanceof_cause") else error
        cause = getattr(error, "cause", None) or cause
        lines = [line for line in str(cause).strip().splitlines() if line.strip()]
        return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:500]
    text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "the trial's worker failed")[:500]


def _remove_checkpoints(trial_path: str | None) -> None:
    """A finished trial never resumes: free the disk its training-state checkpoints take."""
    if trial_path and Path(trial_path).is_dir():
        for folder in Path(trial_path).glob("checkpoint_*"):
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class TrialRecord:
    """What the recorder knows of one Ray trial, from its start to its outcome."""

    run_id: str | None = None  # its MLflow child run; None until it starts
    path: str | None = None  # its Ray trial folder
    history: list[dict] = field(default_factory=list)  # each result's metrics and position flags, as reported
    reported_steps: set[int] = field(default_factory=set)  # steps already written to the study and MLflow
    restarts: list[str] = field(default_factory=list)  # why each restart happened
    micro_batch: int | None = None  # set once out-of-memory retries shrank the batch
    node: str | None = None  # the host its worker runs on, as its results say (hpo.node)
    frozen_cache: str | None = None  # its frozen_cache line, as tagged
    checkpoint_dir: str | None = None  # its latest checkpoint
    outcome: Outcome | None = None  # its one classification, once it ended
    finished: int | None = None  # how many trials had ended before it (the order of ``outcomes``)

    @property
    def started_run_id(self) -> str:
        """``run_id`` of a trial that started: its results and restarts come after on_trial_start opened its run."""
        if self.run_id is None:
            raise RuntimeError("a result arrived for a trial whose MLflow run was never started")
        return self.run_id


class TrialRecorder(Callback):
    def __init__(self, searcher: StudySearcher, tracker: MlflowTracker, parent_run_id: str, *, metric: str, mode: Mode, ledger: Ledger, resources,
                 other_objectives: tuple[str, ...] = (), best_before: float | None = None, keep_best_model: bool = False, role: str = mlflow_tags.SEARCH_ROLE,
                 dataset_inputs: tuple = ()) -> None:
        self.searcher = searcher
        self.best = best_before  # the study's best primary value so far, shown live on the parent run
        self.other_objectives = tuple(other_objectives)  # multi-objective: reported at the end, never per epoch
        self.ledger = ledger
        self.resources = resources
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.metric = metric
        self.mode = mode
        self.trials: dict[str, TrialRecord] = {}  # Ray trial id -> what is known of it
        self.keep_best_model = keep_best_model
        # The best model of each group of trials: the search's (key None: only a trial that beat the
        # study's best) and each confirmed configuration's (key: the search trial it confirms).
        self.kept_models: dict[int | None, KeptModel] = {}
        self.role = role  # SEARCH_ROLE or CONFIRM_ROLE: the hpo.role tag of the trials' MLflow runs
        self.dataset_inputs = tuple(dataset_inputs)  # train and validation (orchestrator.tracking.dataset_inputs), on each trial's run
        self.notes: list[str] = []  # for the user: what could not be logged

    def __getstate__(self) -> dict:
        # Ray Tune pickles callbacks into its experiment snapshot (tuner.pkl). The recorder holds
        # live database connections and is never restored from there: the study DB is the state.
        return {}

    @property
    def study(self) -> optuna.Study:
        return self.searcher.study

    def _trial(self, trial_id: str) -> TrialRecord:
        return self.trials.setdefault(trial_id, TrialRecord())

    @property
    def outcomes(self) -> dict[str, Outcome]:
        """Ray trial id -> outcome of each trial that ended, in the order they ended."""
        # outcome and finished are set together (_record)
        ended = [(record.finished, trial_id, record.outcome) for trial_id, record in self.trials.items()
                 if record.outcome is not None and record.finished is not None]
        return {trial_id: outcome for _, trial_id, outcome in sorted(ended, key=lambda item: item[0])}

    @property
    def kept(self) -> KeptModel | None:
        """The best model of a search trial that beat the study's best in this invocation."""
        return self.kept_models.get(None)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        record = self._trial(trial.trial_id)
        if record.run_id is not None:
            return
        optuna_trial = self.searcher.open_trials[trial.trial_id]
        number = optuna_trial.number
        confirms = optuna_trial.user_attrs.get(CONFIRMS)
        run_id = self.tracker.start_run(
            name=run_name(number, optuna_trial.params) if confirms is None else confirmation_run_name(number, confirms, trial.config.get(SEED_PARAM)),
            params=trial.config,
            tags={
                mlflow_tags.STUDY: self.study.study_name,
                mlflow_tags.ROLE: self.role,
                mlflow_tags.OPTUNA_TRIAL_NUMBER: number,
                mlflow_tags.RAY_TRIAL_ID: trial.trial_id,
                mlflow_tags.STATE: "RUNNING",
                **({mlflow_tags.CONFIRMS: confirms, mlflow_tags.TRAINING_SEED: trial.config.get(SEED_PARAM)} if confirms is not None else {}),
            },
            parent_run_id=self.parent_run_id,
        )
        record.run_id = run_id
        for note in log_dataset_inputs(self.tracker, run_id, self.dataset_inputs, "trial runs"):
            if note not in self.notes:
                self.notes.append(note)
        record.history = []
        record.path = trial.path
        optuna_trial.set_user_attr(RAY_TRIAL_ID, trial.trial_id)
        optuna_trial.set_user_attr(MLFLOW_RUN_ID, run_id)
        self.ledger.trial_started(
            optuna_trial._trial_id, number, trial.trial_id, run_id,  # Optuna exposes the trial id only privately
            cpu=self.resources.cpu, gpu=self.resources.gpu, checkpoint_path=trial.path,
        )

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info) -> None:
        metrics = reported_metrics(result)
        step = int(result.get(STEP, result.get(EPOCH, result.get("training_iteration", 0))))
        record = self.trials[trial.trial_id]
        record.history.append({**metrics, **{key: result[key] for key in (FINAL, INTERIM, EPOCH) if key in result}})
        optuna_trial = self.searcher.open_trials[trial.trial_id]
        value = metrics.get(self.metric)
        reported = record.reported_steps
        # A restarted trial may repeat an epoch, and a training function of your own repeats its
        # last report to mark it final: keep the first report of each step in both stores.
        if step not in reported:
            reported.add(step)
            if value is not None and not self.other_objectives:
                optuna_trial.report(value, step)
            self.tracker.log_metrics(record.started_run_id, metrics, step)
        node = result.get(HOSTNAME)  # where the trial's worker runs: a container's hostname in the compose stack
        if isinstance(node, str) and node and node != record.node:
            record.node = node  # a trial restarted on another node moves
            self.tracker.set_tags(record.started_run_id, {mlflow_tags.NODE: node})
            self.ledger.trial_updated(optuna_trial.number, node=node)
        cache_use = result.get(FROZEN_CACHE)
        if cache_use is not None and cache_use != record.frozen_cache:
            record.frozen_cache = cache_use
            self.tracker.set_tags(record.started_run_id, {mlflow_tags.FROZEN_CACHE: cache_use})
        micro = result.get("micro_batch_size")
        if micro is not None and micro != (record.micro_batch if record.micro_batch is not None else trial.config.get("batch_size")):
            record.micro_batch = int(micro)  # out-of-memory retries shrank it
            self.ledger.trial_updated(optuna_trial.number, micro_batch_size=int(micro))

    def on_checkpoint(self, iteration: int, trials: list[Trial], trial: Trial, checkpoint, **info) -> None:
        optuna_trial = self.searcher.open_trials.get(trial.trial_id)
        if optuna_trial is not None:
            self._trial(trial.trial_id).checkpoint_dir = checkpoint.path
            self.ledger.trial_updated(optuna_trial.number, checkpoint_path=checkpoint.path)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        """Ray restarts the trial (from its last checkpoint) after its worker failed."""
        optuna_trial = self.searcher.open_trials.get(trial.trial_id)
        if optuna_trial is None:
            return
        record = self._trial(trial.trial_id)
        reasons = record.restarts
        reasons.append(error_summary(trial))
        self.ledger.trial_updated(optuna_trial.number, restarts=len(reasons))
        run_id = record.run_id  # None when its worker failed to start: the trial never began
        if run_id is not None:
            self.tracker.set_tags(run_id, {mlflow_tags.RESTARTS: len(reasons), mlflow_tags.LAST_RESTART_REASON: reasons[-1]})

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._finish(trial.trial_id, error=None)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._finish(trial.trial_id, error=error_summary(trial))

    def _finish(self, trial_id: str, error: str | None) -> None:
        optuna_trial = self.searcher.open_trials.pop(trial_id, None)
        if optuna_trial is None:
            return
        outcome = classify(self._trial(trial_id).history, self.metric, self.mode, error, self.other_objectives)
        if outcome.state == optuna.trial.TrialState.PRUNED and self.searcher.deadline is not None and self.searcher.deadline.passed:
            outcome = replace(outcome, reason=f"budget: the --timeout deadline passed; {outcome.reason}")
        self._record(trial_id, optuna_trial, outcome)

    def _record(self, trial_id: str, optuna_trial: optuna.Trial, outcome: Outcome) -> None:
        optuna_trial.set_user_attr(STATE_REASON, outcome.reason)
        values = list(outcome.values) if self.other_objectives and outcome.values else outcome.value
        self.study.tell(optuna_trial, values, state=outcome.state)
        record = self._trial(trial_id)
        record.outcome, record.finished = outcome, sum(1 for other in self.trials.values() if other.finished is not None)
        self.ledger.trial_finished(optuna_trial.number, outcome.state.name, outcome.reason)
        if not self._keep_if_new_best(trial_id, optuna_trial, outcome):
            _remove_checkpoints(record.path)
        run_id = record.run_id
        if run_id is not None:
            self.tracker.finish(
                run_id,
                outcome.mlflow_status,
                tags={
                    mlflow_tags.STATE: outcome.state.name, mlflow_tags.STATE_REASON: outcome.reason,
                    **({mlflow_tags.MICRO_BATCH_SIZE: record.micro_batch} if record.micro_batch is not None else {}),
                },
                metrics=dict(zip((f"best_{m}" for m in (self.metric, *self.other_objectives)), outcome.values, strict=True)) if outcome.values else None,
                step=len(record.history),
            )
        if self.role == mlflow_tags.SEARCH_ROLE:  # the parent run's live story is the search's
            self._log_progress(outcome)
        failpoints.reached("between-trials" if self.role == mlflow_tags.SEARCH_ROLE else "between-confirmation-runs")

    def _keep_if_new_best(self, trial_id: str, optuna_trial: optuna.Trial, outcome: Outcome) -> bool:
        """Keep the best-epoch parameters of a trial that is the best of its group (a search trial:
        beat the study's best); free the previous best's."""
        if not self.keep_best_model or outcome.state != optuna.trial.TrialState.COMPLETE or outcome.value is None:
            return False
        group = optuna_trial.user_attrs.get(CONFIRMS)
        previous = self.kept_models.get(group)
        if not self._better(outcome.value, previous.value if previous is not None else self.best if group is None else None):
            # a tie goes to the lower trial number, as in ranking.rank, whichever trial finished first
            tied_earlier = previous is not None and outcome.value == previous.value and optuna_trial.number < previous.trial_number
            if not tied_earlier:
                return False
        record = self._trial(trial_id)
        folder, run_id = record.checkpoint_dir, record.run_id
        weights = Path(folder) / BEST_MODEL_FILE if folder is not None else None
        if weights is None or not weights.is_file() or run_id is None:  # storage must be a file system (local, NFS)
            return False
        if previous is not None:
            _remove_checkpoints(previous.trial_path)
        self.kept_models[group] = KeptModel(weights, optuna_trial.number, run_id, outcome.value, dict(optuna_trial.params), record.path)
        return True

    def _beats_best(self, value: float | None) -> bool:
        return self._better(value, self.best)

    def _better(self, value: float | None, than: float | None) -> bool:
        return value is not None and is_better(value, than, self.mode)

    def _log_progress(self, outcome: Outcome) -> None:
        """The parent run's live story: best value so far and trials by state, step = trials finished."""
        if self._beats_best(outcome.value):
            self.best = outcome.value
        counts = Counter(o.state.name for o in self.outcomes.values())
        metrics: dict[str, float] = {f"trials_{state.lower()}": counts.get(state, 0) for state in ("COMPLETE", "PRUNED", "FAIL")}
        if self.best is not None:
            metrics[f"best_{self.metric}"] = self.best
        self.tracker.log_metrics(self.parent_run_id, metrics, step=len(self.outcomes))

    def release_kept(self) -> None:
        """Free the disk of every kept model (once it has been scored and registered)."""
        for kept in self.kept_models.values():
            _remove_checkpoints(kept.trial_path)
            shutil.rmtree(kept.weights_file.parent, ignore_errors=True)
        self.kept_models.clear()

    def close_open_trials(self, reason: str) -> None:
        """Record every trial that never reached an end (the sweep stopped under it) and queue its
        parameters so the next run tries them again. Stopped for the time budget: PRUNED; else FAIL."""
        budget = self.searcher.deadline is not None and self.searcher.deadline.passed
        for trial_id in list(self.searcher.open_trials):
            optuna_trial = self.searcher.open_trials.pop(trial_id)
            if budget:
                self._record(trial_id, optuna_trial, Outcome(optuna.trial.TrialState.PRUNED, None, "budget: stopped at the --timeout deadline"))
                continue
            self._record(trial_id, optuna_trial, Outcome(optuna.trial.TrialState.FAIL, None, reason))
            requeue(self.study, optuna_trial)
