"""Run a sweep: prepare once, then let Ray Tune schedule trials that an Optuna study proposes.

Data flow, each step in the module that owns it (README "How it works"): config
(:mod:`orchestrator.config`) -> prepare (:mod:`orchestrator.prepare`: model, data, tokenise once)
-> study (:mod:`orchestrator.storage`: SQL, lease, ledger, reconcile) -> the parent run
(:mod:`orchestrator.tracking`) -> StudySearcher (:mod:`orchestrator.searcher`) -> Ray Tuner
(:mod:`orchestrator.tuning`: the trainable and its scheduler) -> trials.entrypoint.run_trial on
workers -> reports -> TrialRecorder (:mod:`orchestrator.recorder`) -> study DB + MLflow; then the
answer (:mod:`orchestrator.answer`), the MLflow summary (:mod:`orchestrator.mlflow_summary`) and
the result (:func:`orchestrator.result.sweep_result`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator import failpoints
from orchestrator.budget import Deadline
from orchestrator.config import SweepConfig
from orchestrator.errors import StudyLockedError, SweepFailedError
from orchestrator.exit_codes import ExitStatus
from orchestrator.interrupt import GracefulStop
from orchestrator.mlflow_summary import summarise
from orchestrator.mlflow_tags import TAG_PREFIX
from orchestrator.prepare import PreparedSweep, prepare
from orchestrator.ray_session import start_ray
from orchestrator.resources import check_some_node_fits
from orchestrator.result import SweepResult, summarize_study, sweep_result
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
from orchestrator.targets import check_targets

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
    """Every check that needs no compute: model, data, and everything the run writes to
    (:func:`orchestrator.targets.check_targets`). Writes nothing."""
    prepared = prepare(config)
    check_targets(config)
    return prepared


def run_sweep(config: SweepConfig, options: RunOptions = RunOptions(), prepared: PreparedSweep | None = None) -> SweepResult:
    """Run ``options.n_trials`` (default ``budget.n_trials``) more trials of the sweep's study.

    Raises :class:`ConfigError` before anything is written when the input is bad, and
    :class:`StudyLockedError` when another invocation is running the same study.
    """
    from orchestrator.storage import db
    from orchestrator.storage.lease import StudyLease
    from orchestrator.storage.ledger import Ledger

    started = time.time()
    deadline = Deadline(options.timeout_s)  # counts from the start of the invocation
    if prepared is None:
        prepared = validate(config)
    else:
        check_targets(config)  # a prepared sweep's model and data were checked; where it writes may have changed
    if options.new_study:
        with schema_lock(config.storage.study_db):
            config = config.model_copy(update={"name": next_version_name(config.storage.study_db, config.name)})
    # Trial errors reach the user through the recorder (state reason) and the progress lines;
    # Tune's own per-error tracebacks are for --debug.
    os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "1" if options.debug else "0"
    engine = db.create_engine(config.storage.study_db)
    ledger = Ledger(engine, config.name)
    lease = StudyLease(engine, config.name, holder=ledger.invocation_id)
    holder = lease.held_by_another()
    if holder is not None and not options.wait_s:
        engine.dispose()
        raise StudyLockedError(config.name, holder)  # before starting Ray or writing anything
    started_ray = start_ray(config.cluster.address, options.debug)
    try:
        import ray

        check_some_node_fits(config.resources, ray.nodes())
        try:
            with schema_lock(config.storage.study_db):
                db.upgrade(engine)
                storage = open_storage(config.storage.study_db)  # creates Optuna's tables in a new database
            lease.acquire(wait_s=options.wait_s)
            try:
                return _run_holding_lease(config, options, prepared, storage, ledger, started, deadline)
            except BaseException as error:
                _record_failure(config, ledger, error)
                raise
            finally:
                lease.release()
        finally:
            engine.dispose()
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _record_failure(config, ledger, error: BaseException) -> None:
    """An invocation that ends by raising (exit 1, or 130 for a second signal) is never left looking
    ok or running: its ledger row and its MLflow parent run say failed (or interrupted). Best effort:
    when the database itself broke, the next run's reconcile closes the invocation."""
    status = ExitStatus.INTERRUPTED if isinstance(error, KeyboardInterrupt) else ExitStatus.FAILED
    try:
        ended, parent_run_id = ledger.end_if_open(status, mask(f"{type(error).__name__}: {error}"))
        if ended and parent_run_id:
            from orchestrator.tracking import end_parent_run

            end_parent_run(config.storage.mlflow, parent_run_id, status)
    except Exception:  # noqa: BLE001 - the error being raised is the one to report
        pass


def _run_holding_lease(config, options: RunOptions, prepared: PreparedSweep, storage, ledger, started: float, deadline: Deadline) -> SweepResult:
    from optuna.trial import TrialState

    from orchestrator.answer import settle_answer
    from orchestrator.confirm import confirmations_pending
    from orchestrator.confirmation_run import Confirmation
    from orchestrator.dataset_inputs import TRIAL_SPLITS, dataset_inputs, log_dataset_inputs
    from orchestrator.frozen_layers import with_frozen_cache
    from orchestrator.recorder import TrialRecorder
    from orchestrator.searcher import StudySearcher
    from orchestrator.storage.reconcile import reconcile
    from orchestrator.tracking import MlflowTracker, log_sweep_definition, start_sweep_run
    from orchestrator.tuning import fit

    study = open_study(config, storage)
    check_space_unchanged(study, config)
    check_splits_unchanged(study, prepared.splits)
    ledger.start_invocation(config)
    record_splits(study, prepared.splits)
    results_dir = Path(config.storage.results_dir).resolve()
    with schema_lock(config.storage.mlflow):  # MLflow migrates a new store on first use
        enable_wal(config.storage.mlflow)
        tracker = MlflowTracker(config.storage.mlflow, config.name, results_dir / "mlartifacts")
    from optuna.exceptions import ExperimentalWarning

    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names([objective.metric for objective in config.objective_list])  # plots and reports show them
    if study.user_attrs.get("mlflow_experiment_id") != tracker.experiment_id:
        study.set_user_attr("mlflow_experiment_id", tracker.experiment_id)  # reports link to the runs
    reconciled = reconcile(study, storage, ledger, tracker)
    notes = [f"closed {len(reconciled)} trial(s) left RUNNING by an earlier invocation and queued their parameters again"] if reconciled else []
    notes += list(prepared.splits.notes) if prepared.splits is not None else []
    queued = enqueue_points(study, [*config.seed_trials, *options.enqueue])
    if queued:
        notes.append(f"queued {queued} seed point(s) to run first")
    _, best_before, _ = summarize_study(study)
    n_trials = options.n_trials or config.budget.n_trials
    if options.total_trials is not None:
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        n_trials = min(n_trials, options.total_trials - finished) if options.n_trials else options.total_trials - finished
        if n_trials <= 0:
            enough = f"the study already has {finished} finished trials (--total-trials {options.total_trials})"
            if not (config.confirm.top_k and confirmations_pending(study, config)):
                ledger.end_invocation("ok", enough)
                return sweep_result(
                    config, prepared, study, this_run={}, best_before=best_before, started=started, experiment_id=tracker.experiment_id,
                    parent_run_id=None, invocation_id=ledger.invocation_id, exit_status=ExitStatus.OK, notes=[*notes, enough],
                )
            notes.append(f"{enough}: only the confirmation runs it still owes run now")
            n_trials = 0
    prepared, cache_note = with_frozen_cache(prepared)  # built once the invocation has trials to run
    notes += [cache_note] if cache_note else []
    parent_run_id = start_sweep_run(tracker, config, prepared, n_trials, ledger.invocation_id)
    ledger.set_parent_run(parent_run_id)
    log_sweep_definition(tracker, parent_run_id, config)
    inputs = dataset_inputs(prepared)  # every split on the parent run; train and validation on each trial's run
    notes += log_dataset_inputs(tracker, parent_run_id, inputs.values(), "the parent run")
    trial_inputs = tuple(inputs[name] for name in TRIAL_SPLITS if name in inputs)
    searcher = StudySearcher(study, config.search_space, config.objective.metric, config.objective.mode, deadline)
    # Trials hand over their best epoch's parameters when their model may be registered or scored on the test split.
    keep_search_model = config.registered_model is not None or (prepared.test is not None and not config.confirm.top_k)
    recorder = TrialRecorder(
        searcher, tracker, parent_run_id, config.objective.metric, config.objective.mode, ledger, config.resources,
        other_objectives=tuple(objective.metric for objective in config.objective_list[1:]),
        best_before=best_before.value if best_before else None,
        keep_best_model=keep_search_model, dataset_inputs=trial_inputs,
    )
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
                fit(prepared, searcher, recorder, n_trials, [stop, deadline], options.callbacks, options.trial_function, keep_search_model, results_dir)
            if config.confirm.top_k and not stop.signal_name and deadline.passed:
                notes.append("confirmation not run: the --timeout budget is spent; the next run of this sweep does it")
            elif config.confirm.top_k and not stop.signal_name:
                confirmation = Confirmation(config, prepared, study, ledger, tracker, parent_run_id, deadline, trial_inputs)
                notes += confirmation.run(options, stop, results_dir)
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
        closing = f"interrupted: the sweep stopped ({reason or exit_status}) before this trial finished"
        recorder.close_open_trials(closing)
        if confirmation is not None:
            confirmation.close(closing, exit_status)
        if exit_status == ExitStatus.OK and deadline.passed:
            exit_status = ExitStatus.BUDGET
        this_run = dict(Counter(outcome.state.name for outcome in recorder.outcomes.values()))
        answer = None
        if exit_status != ExitStatus.FAILED:
            answer, answer_notes = settle_answer(config, prepared, study, recorder, confirmation, tracker, parent_run_id)
            notes += answer_notes + summarise(config, study, tracker, parent_run_id)
        if exit_status == ExitStatus.OK and this_run and set(this_run) == {"FAIL"}:  # exit 1, so not ok in the ledger nor in MLflow
            reason = f"all {sum(this_run.values())} trials failed; first reason: {next(iter(recorder.outcomes.values())).reason}"
            exit_status = ExitStatus.FAILED
        notes += recorder.notes + (confirmation.recorder.notes if confirmation is not None else [])
        recorder.release_kept()
        if confirmation is not None:
            confirmation.recorder.release_kept()
        result = sweep_result(
            config, prepared, study, this_run=this_run, best_before=best_before, started=started, experiment_id=tracker.experiment_id,
            parent_run_id=parent_run_id, invocation_id=ledger.invocation_id, exit_status=exit_status, notes=notes, answer=answer,
        )
        failpoints.reached("mlflow-summary")
        tracker.finish(
            parent_run_id,
            exit_status.mlflow_status,
            tags={
                f"{TAG_PREFIX}exit_status": exit_status,
                f"{TAG_PREFIX}new_best": result.new_best,
                **{f"{TAG_PREFIX}trials.{state.lower()}": n for state, n in this_run.items()},
            },
            metrics=(dict(zip((f"best_{o.metric}" for o in config.objective_list), result.best.values, strict=True))
                     if result.best is not None and result.best.values is not None else None),
            step=sum(this_run.values()),
        )
        ledger.end_invocation(exit_status, reason)

    if exit_status == ExitStatus.FAILED:  # every trial failed: exit 1 (an error raised by the fit is already on its way up)
        raise SweepFailedError(reason)
    return result
