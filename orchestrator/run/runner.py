"""Run a sweep: prepare once, then let Ray Tune schedule trials that an Optuna study proposes.

Data flow, each step in the module that owns it (README "How it works"): config
(:mod:`orchestrator.sweep.config`) -> prepare (:mod:`orchestrator.data.prepare`: model, data, tokenise once)
-> study (:mod:`orchestrator.storage`: SQL, lease, ledger, reconcile) -> the parent run
(:mod:`orchestrator.tracking.tracker`) -> StudySearcher (:mod:`orchestrator.search.searcher`) -> Ray Tuner
(:mod:`orchestrator.run.tuning`: the trainable and its scheduler) -> trials.entrypoint.run_trial on
workers -> reports -> TrialRecorder (:mod:`orchestrator.run.recorder`) -> study DB + MLflow; then the
answer (:mod:`orchestrator.answer.settle`), the MLflow summary (:mod:`orchestrator.reports.mlflow_summary`) and
the result (:func:`orchestrator.run.result.sweep_result`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import StudyLockedError, SweepFailedError
from orchestrator.exit_codes import ExitStatus
from orchestrator.progress import failpoints
from orchestrator.progress.phase_marks import mark
from orchestrator.progress.phases import phase
from orchestrator.reports.mlflow_summary import summarise
from orchestrator.run.ray_session import RayStart
from orchestrator.run.resources import check_some_node_fits
from orchestrator.run.result import SweepResult, sweep_result
from orchestrator.run.targets import check_targets
from orchestrator.secrets import mask
from orchestrator.storage.db.schema_lock import schema_lock
from orchestrator.storage.study import (
    check_space_unchanged,
    check_splits_unchanged,
    enable_wal,
    enqueue_points,
    next_version_name,
    open_storage,
    open_study,
    record_splits,
)
from orchestrator.storage.summary import summarize_study
from orchestrator.storage.trial_attrs import MLFLOW_EXPERIMENT_ID
from orchestrator.sweep.config import SweepConfig
from orchestrator.tracking import mlflow_tags

if TYPE_CHECKING:  # imported where used: hpo validate of a sweep whose database is wrong answers before torch loads
    from orchestrator.data.prepare import PreparedSweep
    from orchestrator.run.budget import Deadline
    from orchestrator.run.interrupt import GracefulStop

# Ray Tune's per-trial CSV/JSON/TensorBoard loggers cost time and disk; the study DB and MLflow hold the results.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
# No usage telemetry leaves the machine (and none waits on an unreachable network).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "10000")


@dataclass(frozen=True)
class RunOptions:
    n_trials: int | None = None  # overrides budget.n_trials
    debug: bool = False
    callbacks: tuple = ()  # extra Ray Tune callbacks (the CLI's progress display)
    trial_function: Callable | None = None  # replaces trials.entrypoint.run_trial(config, settings, data)
    wait_s: float = 0.0  # how long to wait for another invocation of the same study to finish
    total_trials: int | None = None  # stop once the study has this many finished (COMPLETE/PRUNED) trials
    timeout_s: float | None = None  # wall-clock budget of this invocation
    enqueue: tuple[dict, ...] = ()  # points to run first, beside the sweep's seed_trials
    new_study: bool = False  # continue in the next free versioned study name (name-v2, ...)


def validate(config: SweepConfig) -> PreparedSweep:
    """Every check that needs no compute: everything the run writes to
    (:func:`orchestrator.run.targets.check_targets`, first: it needs no data), then model and data. Writes nothing."""
    check_targets(config)
    from orchestrator.data.prepare import prepare

    return prepare(config)


def run_sweep(config: SweepConfig, options: RunOptions = RunOptions(), prepared: PreparedSweep | None = None) -> SweepResult:
    """Run ``options.n_trials`` (default ``budget.n_trials``) more trials of the sweep's study.

    Raises :class:`ConfigError` before anything is written when the input is bad, and
    :class:`StudyLockedError` when another invocation is running the same study.
    """
    from orchestrator.run.budget import Deadline
    from orchestrator.storage import db
    from orchestrator.storage.lease import StudyLease
    from orchestrator.storage.ledger import Ledger

    started = time.time()
    deadline = Deadline(options.timeout_s)  # counts from the start of the invocation
    check_targets(config)  # where it writes, first: it needs no data (a prepared sweep's model and data were checked)
    # Trial errors reach the user through the recorder (state reason) and the progress lines;
    # Tune's own per-error tracebacks are for --debug.
    os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "1" if options.debug else "0"
    ray_starting = RayStart(config.cluster.address, options.debug)  # while the model and data are prepared
    try:
        if prepared is None:
            from orchestrator.data.prepare import prepare

            with phase("preparing the model and data") as step:
                prepared = prepare(config)
                step.detail = ", ".join(f"{rows} {split}" for split, rows in prepared.splits.sizes().items()) + " rows" if prepared.splits else ""
        mark("validation")
        if options.new_study:
            with schema_lock(config.storage.study_db):
                config = config.model_copy(update={"name": next_version_name(config.storage.study_db, config.name)})
        engine = db.create_engine(config.storage.study_db)
        ledger = Ledger(engine, config.name)
        lease = StudyLease(engine, config.name, holder=ledger.invocation_id)
        holder = lease.held_by_another()
        if holder is not None and not options.wait_s:
            engine.dispose()
            raise StudyLockedError(config.name, holder)  # before writing anything
        ray_starting.wait()
    except BaseException:
        ray_starting.shutdown()
        raise
    mark("ray start")
    try:
        import ray

        check_some_node_fits(config.resources, ray.nodes())
        try:
            with schema_lock(config.storage.study_db):
                db.upgrade(engine)
                storage = open_storage(config.storage.study_db)  # creates Optuna's tables in a new database
            lease.acquire(wait_s=options.wait_s)
            try:
                return _run_holding_lease(config, options, prepared, storage, ledger, started=started, deadline=deadline)
            except BaseException as error:
                _record_failure(config, ledger, error)
                raise
            finally:
                lease.release()
        finally:
            engine.dispose()
    finally:
        mark("result")
        ray_starting.shutdown()
        mark("shutdown")


def _record_failure(config, ledger, error: BaseException) -> None:
    """An invocation that ends by raising (exit 1, or 130 for a second signal) is never left looking
    ok or running: its ledger row and its MLflow parent run say failed (or interrupted). Best effort:
    when the database itself broke, the next run's reconcile closes the invocation."""
    status = ExitStatus.INTERRUPTED if isinstance(error, KeyboardInterrupt) else ExitStatus.FAILED
    try:
        ended, parent_run_id = ledger.end_if_open(status, mask(f"{type(error).__name__}: {error}"))
        if ended and parent_run_id:
            from orchestrator.tracking.tracker import end_parent_run

            end_parent_run(config.storage.mlflow, parent_run_id, status)
    except Exception:  # noqa: BLE001 - the error being raised is the one to report
        pass


def _run_holding_lease(config, options: RunOptions, prepared: PreparedSweep, storage, ledger, *, started: float, deadline: Deadline) -> SweepResult:
    """The run loop, step by step as README "How it works" draws it."""
    from orchestrator.answer.confirm import confirmations_pending
    from orchestrator.answer.settle import answer_owed, stored_answer
    from orchestrator.data.frozen_layers import with_frozen_cache
    from orchestrator.run.confirmation_run import Confirmation
    from orchestrator.run.interrupt import GracefulStop
    from orchestrator.run.tuning import fit

    with phase("opening the study and MLflow"):
        study, tracker, notes = _open_study(config, options, prepared, storage, ledger)
    _, best_before, _ = summarize_study(study)
    n_trials, enough = _trials_to_run(config, options, study)
    confirmations_owed = bool(config.confirm.top_k) and confirmations_pending(study, config)
    if enough is not None:
        # The answer is part of the sweep's result: what a killed invocation left of it is settled whatever the budget says.
        answer_missing = None if confirmations_owed else answer_owed(config, prepared, study, ledger.engine)
        if not confirmations_owed and answer_missing is None:
            ledger.end_invocation(ExitStatus.OK, enough)
            return sweep_result(
                config, prepared, study, this_run={}, best_before=best_before, started=started, experiment_id=tracker.experiment_id,
                parent_run_id=None, invocation_id=ledger.invocation_id, exit_status=ExitStatus.OK, notes=[*notes, enough],
                answer=stored_answer(study),
            )
        notes.append(f"{enough}: only the confirmation runs it still owes run now" if confirmations_owed
                     else f"{enough}: only {answer_missing}, which an earlier invocation left unsettled, is settled now")
    if n_trials > 0 or confirmations_owed:
        prepared, cache_note = with_frozen_cache(prepared)  # built once the invocation has trials to run
        notes += [cache_note] if cache_note else []
    parent_run_id, trial_inputs = _start_parent_run(config, prepared, tracker, ledger, n_trials, notes=notes)
    # Trials hand over their best epoch's parameters when their model may be registered or scored on the test split.
    keep_search_model = config.registered_model is not None or (prepared.test is not None and not config.confirm.top_k)
    recorder = _recorder(config, study, tracker, ledger, parent_run_id, deadline=deadline, best_before=best_before, keep_best_model=keep_search_model, trial_inputs=trial_inputs)
    for callback in options.callbacks:
        if hasattr(callback, "attach"):
            callback.attach(recorder, n_trials, prepared)
    stop = GracefulStop()
    confirmation: Confirmation | None = None
    exit_status: ExitStatus = ExitStatus.FAILED
    reason: str | None = None
    failpoints.reached("before-first-trial")
    try:
        with stop.installed():
            if n_trials > 0:
                fit(prepared, recorder.searcher, recorder, n_trials, stoppers=[stop, deadline], callbacks=options.callbacks, trial_function=options.trial_function,
                    keep_best_model=keep_search_model, results_dir=Path(config.storage.results_dir).resolve())
            if config.confirm.top_k and not stop.signal_name and deadline.passed:
                notes.append("confirmation not run: the --timeout budget is spent; the next run of this sweep does it")
            elif config.confirm.top_k and not stop.signal_name:
                failpoints.reached("before-confirmation")
                confirmation = Confirmation(config, prepared, study, ledger=ledger, tracker=tracker, parent_run_id=parent_run_id, deadline=deadline, dataset_inputs=trial_inputs)
                notes += confirmation.run(options, stop, Path(config.storage.results_dir).resolve())
        if stop.signal_name:
            exit_status, reason = ExitStatus.INTERRUPTED, f"stopped by {stop.signal_name}"
        else:
            exit_status = ExitStatus.OK
    except KeyboardInterrupt:
        exit_status, reason = ExitStatus.INTERRUPTED, "stopped at once by a second signal"
    except BaseException as error:
        reason = f"{type(error).__name__}: {error}"
        raise
    finally:
        with stop.installed():  # a first signal now lets the answer be settled, then the invocation ends interrupted
            result, exit_status, reason = _finish(
                config, prepared, study, tracker, ledger, recorder=recorder, confirmation=confirmation, parent_run_id=parent_run_id, deadline=deadline,
                stop=stop, exit_status=exit_status, reason=reason, notes=notes, best_before=best_before, started=started,
            )

    if exit_status == ExitStatus.FAILED:  # every trial failed: exit 1 (an error raised by the fit is already on its way up)
        raise SweepFailedError(reason)
    return result


def _open_study(config, options: RunOptions, prepared: PreparedSweep, storage, ledger) -> tuple:
    """The study (SQL) step: open the study, check it matches the sweep, start this invocation in the
    ledger, open MLflow, close what a dead predecessor left open and queue the seed points.
    Returns the study, the MLflow tracker and the notes so far."""
    from optuna.exceptions import ExperimentalWarning

    from orchestrator.run.reconcile import reconcile
    from orchestrator.tracking.tracker import MlflowTracker

    study = open_study(config, storage)
    check_space_unchanged(study, config)
    check_splits_unchanged(study, prepared.splits)
    ledger.start_invocation(config)
    record_splits(study, prepared.splits)
    with schema_lock(config.storage.mlflow):  # MLflow migrates a new store on first use
        enable_wal(config.storage.mlflow)
        tracker = MlflowTracker(config.storage.mlflow, config.name, Path(config.storage.results_dir).resolve() / "mlartifacts")
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names([objective.metric for objective in config.objective_list])  # plots and reports show them
    if study.user_attrs.get(MLFLOW_EXPERIMENT_ID) != tracker.experiment_id:
        study.set_user_attr(MLFLOW_EXPERIMENT_ID, tracker.experiment_id)  # reports link to the runs
    reconciled = reconcile(study, storage, ledger, tracker)
    notes = [f"closed {len(reconciled)} trial(s) left RUNNING by an earlier invocation and queued their parameters again"] if reconciled else []
    notes += list(prepared.splits.notes) if prepared.splits is not None else []
    queued = enqueue_points(study, [*config.seed_trials, *options.enqueue])
    if queued:
        notes.append(f"queued {queued} seed point(s) to run first")
    return study, tracker, notes


def _trials_to_run(config, options: RunOptions, study) -> tuple[int, str | None]:
    """How many trials this invocation runs, and why none when ``--total-trials`` is already reached."""
    from optuna.trial import TrialState

    n_trials = options.n_trials or config.budget.n_trials
    if options.total_trials is None:
        return n_trials, None
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    n_trials = min(n_trials, options.total_trials - finished) if options.n_trials else options.total_trials - finished
    if n_trials > 0:
        return n_trials, None
    return 0, f"the study already has {finished} finished trials (--total-trials {options.total_trials})"


def _start_parent_run(config, prepared: PreparedSweep, tracker, ledger, n_trials: int, *, notes: list[str]) -> tuple[str, tuple]:
    """The parent run (MLflow) step: the invocation's run, the sweep's definition and its data splits.
    Returns the parent run's id and the dataset inputs each trial's run logs; adds to ``notes``."""
    from orchestrator.tracking.dataset_inputs import TRIAL_SPLITS, dataset_inputs, log_dataset_inputs
    from orchestrator.tracking.tracker import log_sweep_definition, start_sweep_run

    parent_run_id = start_sweep_run(tracker, config, prepared, n_trials, ledger.invocation_id)
    ledger.set_parent_run(parent_run_id)
    log_sweep_definition(tracker, parent_run_id, config)
    inputs = dataset_inputs(prepared)  # every split on the parent run; train and validation on each trial's run
    notes += log_dataset_inputs(tracker, parent_run_id, inputs.values(), "the parent run")
    return parent_run_id, tuple(inputs[name] for name in TRIAL_SPLITS if name in inputs)


def _recorder(config, study, tracker, ledger, parent_run_id: str, *, deadline: Deadline, best_before, keep_best_model: bool, trial_inputs: tuple):
    """The searcher that asks the study for each trial, and the recorder that writes each result back."""
    from orchestrator.run.recorder import TrialRecorder
    from orchestrator.search.searcher import StudySearcher

    searcher = StudySearcher(study, config.search_space, config.objective.metric, config.objective.mode, deadline=deadline)
    return TrialRecorder(
        searcher, tracker, parent_run_id, metric=config.objective.metric, mode=config.objective.mode, ledger=ledger, resources=config.resources,
        other_objectives=tuple(objective.metric for objective in config.objective_list[1:]),
        best_before=best_before.value if best_before else None,
        keep_best_model=keep_best_model, dataset_inputs=trial_inputs,
    )


def _finish(config, prepared: PreparedSweep, study, tracker, ledger, *, recorder, confirmation, parent_run_id: str, deadline: Deadline,
            stop: GracefulStop, exit_status: ExitStatus, reason: str | None, notes: list[str], best_before, started: float) -> tuple[SweepResult, ExitStatus, str | None]:
    """The result step, also after an interruption or an error: close what is still open, settle the
    answer, summarise on MLflow, and end the parent run and the ledger's invocation with one status."""
    from orchestrator.answer.settle import record_logged, settle_answer

    closing = f"interrupted: the sweep stopped ({reason or exit_status}) before this trial finished"
    recorder.close_open_trials(closing)
    if confirmation is not None:
        confirmation.close(closing, exit_status)
    if exit_status == ExitStatus.OK and deadline.passed:
        exit_status = ExitStatus.BUDGET
    this_run = dict(Counter(outcome.state.name for outcome in recorder.outcomes.values()))
    answer = None
    if exit_status != ExitStatus.FAILED:
        answer, answer_notes = settle_answer(config, prepared, study, recorder, confirmation, tracker=tracker, parent_run_id=parent_run_id, ledger=ledger)
        failpoints.reached("before-summary")
        notes += answer_notes + summarise(config, study, tracker, parent_run_id)
        if answer is not None:
            record_logged(study, answer, parent_run_id)
    if exit_status == ExitStatus.OK and this_run and set(this_run) == {"FAIL"}:  # exit 1, so not ok in the ledger nor in MLflow
        reason = f"all {sum(this_run.values())} trials failed; first reason: {next(iter(recorder.outcomes.values())).reason}"
        exit_status = ExitStatus.FAILED
    failpoints.reached("mlflow-summary")
    if stop.signal_name and exit_status in (ExitStatus.OK, ExitStatus.BUDGET):  # it came while the answer was settled
        exit_status, reason = ExitStatus.INTERRUPTED, f"stopped by {stop.signal_name} once the answer was settled"
    notes += recorder.notes + (confirmation.recorder.notes if confirmation is not None else [])
    recorder.release_kept()
    if confirmation is not None:
        confirmation.recorder.release_kept()
    result = sweep_result(
        config, prepared, study, this_run=this_run, best_before=best_before, started=started, experiment_id=tracker.experiment_id,
        parent_run_id=parent_run_id, invocation_id=ledger.invocation_id, exit_status=exit_status, notes=notes, answer=answer,
    )
    tracker.finish(
        parent_run_id,
        exit_status.mlflow_status,
        tags={
            mlflow_tags.EXIT_STATUS: exit_status,
            mlflow_tags.NEW_BEST: result.new_best,
            **{f"{mlflow_tags.TRIALS_PREFIX}{state.lower()}": n for state, n in this_run.items()},
        },
        metrics=(dict(zip((f"best_{o.metric}" for o in config.objective_list), result.best.values, strict=True))
                 if result.best is not None and result.best.values is not None else None),
        step=sum(this_run.values()),
    )
    ledger.end_invocation(exit_status, reason)
    return result, exit_status, reason
