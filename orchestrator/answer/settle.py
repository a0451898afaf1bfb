"""The sweep's answer: the chosen configuration, and each of its scores with what it was measured on.

- **search score**: the best validation score of the search (one training seed, chosen as the best
  of many: optimistic by construction);
- **confirmed**: the mean ± std of its validation scores over new training seeds (``confirm``);
- **test**: its best confirmed run (or, without confirmation, its search trial) scored once on the
  test split, which no trial, sampler or scheduler ever saw.

The answer is kept in the search study (user attribute :data:`ANSWER_ATTR`), so ``hpo best``,
``hpo report`` and the next invocation read it from the study database. It is part of the sweep's
result: each step (test score, registration, the parent run's metrics and summary) is recorded as
it is done, and every invocation settles whatever a killed one left missing (:func:`answer_owed`),
exactly once.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import optuna

from orchestrator.answer.confirm import Confirmed, confirmed
from orchestrator.progress import failpoints
from orchestrator.progress.phases import phase
from orchestrator.storage.ranking import rank
from orchestrator.storage.trial_attrs import ANSWER_ATTR, CONFIRMS, MLFLOW_RUN_ID, STATE_REASON
from orchestrator.tracking import mlflow_tags
from orchestrator.tracking.best_model import KeptModel
from trials.objective import Mode, mode_of
from trials.trial_files import BEST_MODEL_FILE

SEARCH_SCORE = "search score (validation, one seed)"
CONFIRMED_SCORE = "confirmed (validation, mean ± std over new seeds)"
TEST_SCORE = "test (rows the search never saw)"


@dataclass
class Answer:
    trial: int  # the chosen search trial
    params: dict
    metric: str
    search_value: float
    search_trials: int  # completed search trials it was chosen from
    confirmed: dict | None = None  # Confirmed.to_dict(): values, mean, std, failed
    test: dict | None = None  # evaluation.TestScore.to_dict()
    registered: str | None = None  # NAME/VERSION of the registered model
    mode: Mode = "max"  # the objective's direction (answers stored before it was kept were all read as max)
    logged_on: str | None = None  # the MLflow parent run holding its metrics and the study's summary; None: not yet
    notes: list[str] = field(default_factory=list)

    @property
    def optimism(self) -> float | None:
        """How much better the search score is than the test score (positive: it overstates the model),
        the cost of selecting on validation: search − test for a maximised metric, test − search for a minimised one."""
        test = (self.test or {}).get("metrics", {}).get("test_" + self.metric.removeprefix("val_"))
        if test is None:
            return None
        return self.search_value - test if self.mode == "max" else test - self.search_value

    def to_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "notes"}

    @classmethod
    def from_dict(cls, stored: dict) -> Answer:
        return cls(**{key: value for key, value in stored.items() if key in cls.__dataclass_fields__})


def stored_answer(study: optuna.Study) -> Answer | None:
    stored = study.user_attrs.get(ANSWER_ATTR)
    return Answer.from_dict(stored) if stored else None


def choose(search: optuna.Study, confirmation: optuna.Study | None, metric: str, prefer: int | None = None) -> tuple[Answer | None, Confirmed | None]:
    """The configuration to answer with: the best confirmed mean when there are confirmation runs, else the
    search's best (on a tie, trial ``prefer``: the one whose model this invocation kept, else the one answered before)."""
    complete = rank(search, search.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if not complete:
        return None, None
    by_number = {trial.number: trial for trial in complete}
    results = confirmed(search, confirmation) if confirmation is not None else []
    chosen = results[0] if results else None
    trial = by_number[chosen.trial] if chosen is not None else complete[0]
    if chosen is None and prefer in by_number and by_number[prefer].values == trial.values:
        trial = by_number[prefer]
    answer = Answer(trial.number, dict(trial.params), metric, trial.values[0], len(complete),
                    confirmed=chosen.to_dict() if chosen is not None else None, mode=mode_of(search.direction))
    return answer, chosen


def scored_run(answer: Answer, search: optuna.Study, confirmation: optuna.Study | None) -> tuple[optuna.Study, optuna.trial.FrozenTrial]:
    """The run whose model stands for the answer (scored on the test split, registered): the chosen
    configuration's best completed confirmation run, or without confirmation its search trial."""
    if answer.confirmed is not None and confirmation is not None:
        runs = [run for run in confirmation.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if run.user_attrs.get(CONFIRMS) == answer.trial and not run.user_attrs.get(STATE_REASON, "").startswith("interrupted")]
        if runs:
            return confirmation, rank(confirmation, runs)[0]  # a tie goes to the earlier run, as the recorder keeps it
    return search, search.get_trials(deepcopy=False)[answer.trial]


def answer_model(answer: Answer, search: optuna.Study, confirmation: optuna.Study | None, engine, kept_here: list[KeptModel]) -> tuple[KeptModel | None, bool]:
    """The model of :func:`scored_run`: kept by this invocation, or left on disk by an earlier one that
    stopped before it scored or registered it (its best-epoch parameters in the checkpoint the ledger
    recorded). Returns the model (None when neither holds it) and whether an earlier invocation left it."""
    from orchestrator.storage.ledger import Ledger

    study, run = scored_run(answer, search, confirmation)
    for kept in kept_here:
        if kept.trial_number == run.number and kept.run_id == run.user_attrs.get(MLFLOW_RUN_ID):
            return kept, False
    checkpoint = Ledger(engine, study.study_name).checkpoint_path(run.number)
    run_id = run.user_attrs.get(MLFLOW_RUN_ID)
    if checkpoint is None or run_id is None or not (Path(checkpoint) / BEST_MODEL_FILE).is_file():
        return None, False
    return KeptModel(Path(checkpoint) / BEST_MODEL_FILE, run.number, run_id, run.values[0], dict(run.params), str(Path(checkpoint).parent)), True


def score_lines(answer: Answer) -> list[tuple[str, str]]:
    """(what it was measured on, the score) for each score the answer has, in the order to show them."""
    lines = [(SEARCH_SCORE, f"{answer.search_value:.4f} (trial {answer.trial}; {answer.search_trials} search trials completed)")]
    if answer.confirmed is not None:
        confirmed_ = answer.confirmed
        failed = f", {confirmed_['failed']} run(s) failed" if confirmed_["failed"] else ""
        lines.append((CONFIRMED_SCORE, f"{confirmed_['mean']:.4f} ± {confirmed_['std']:.4f} over {len(confirmed_['values'])} seed(s){failed}"))
    test_metric = "test_" + answer.metric.removeprefix("val_")
    if answer.test is not None and test_metric in answer.test["metrics"]:
        lines.append((TEST_SCORE, f"{answer.test['metrics'][test_metric]:.4f} on {answer.test['rows']} rows"))
        difference = "search − test" if answer.mode == "max" else "test − search"
        lines.append((f"optimism of selecting on validation ({difference})", f"{answer.optimism:+.4f}"))
    return lines


def answer_owed(config, prepared, study: optuna.Study, engine) -> str | None:
    """What of the study's answer is still missing and can be settled now (None: nothing): an
    invocation killed before its end leaves it to the next, whatever that one's budget."""
    from orchestrator.answer.confirm import confirmation_study_name

    if config.multi_objective:
        return None
    previous = stored_answer(study)
    try:
        confirmation = optuna.load_study(study_name=confirmation_study_name(study.study_name), storage=study._storage) if config.confirm.top_k else None
    except KeyError:  # no confirmation run yet
        confirmation = None
    answer, _ = choose(study, confirmation, config.objective.metric, prefer=previous.trial if previous is not None else None)
    if answer is None:
        return None
    if previous is None or (previous.trial, previous.search_trials, previous.confirmed) != (answer.trial, answer.search_trials, answer.confirmed):
        return "the answer"
    model, _ = answer_model(answer, study, confirmation, engine, [])
    if prepared.test is not None and previous.test is None and model is not None:
        return "the answer's test score"
    if config.registered_model and previous.registered is None and model is not None:
        return "the answer's registered model"
    if previous.logged_on is None:
        return "the answer's MLflow parent run and summary"
    return None


def settle_answer(config, prepared, study: optuna.Study, recorder, confirmation, *, tracker, parent_run_id: str, ledger) -> tuple[Answer | None, list[str]]:
    """Choose, score on the test split, register, and record the answer in the study and on the MLflow
    parent run; each step only once for the study, whichever invocation trained the chosen model.
    Failures become notes: the trials are saved."""
    from orchestrator.answer.confirm import open_confirmation_study

    if config.multi_objective:
        return None, []
    confirmation_study = confirmation.study if confirmation is not None else (
        open_confirmation_study(study, config.sampler.seed) if config.confirm.top_k else None)
    previous = stored_answer(study)
    prefer = recorder.kept.trial_number if recorder.kept else previous.trial if previous is not None else None
    answer, _ = choose(study, confirmation_study, config.objective.metric, prefer=prefer)
    if answer is None:
        return None, []
    same_choice = previous is not None and previous.trial == answer.trial
    kept_here = [*([recorder.kept] if recorder.kept else []), *(confirmation.recorder.kept_models.values() if confirmation is not None else [])]
    kept, left_by_earlier = answer_model(answer, study, confirmation_study, ledger.engine, kept_here)
    if kept is not None:  # rebuilt with what its trial ran with: the fixed values too (method: lora needs its adapters)
        kept = replace(kept, params={**config.search_space.fixed, **kept.params})
    answer.registered = previous.registered if same_choice and previous is not None else None
    notes: list[str] = []
    if prepared.test is not None:
        if same_choice and previous is not None and previous.test is not None and (kept is None or previous.test.get("run_id") == kept.run_id):
            answer.test = previous.test
        elif kept is not None:
            failpoints.reached("before-test-score")
            with phase(f"scoring the chosen configuration (trial {answer.trial}) on the test split, {len(prepared.test)} rows"):
                notes += _score(config, prepared, answer, kept, tracker, parent_run_id=parent_run_id)
            study.set_user_attr(ANSWER_ATTR, answer.to_dict())  # scored once: a kill from here on does not score it again
        else:
            notes.append(_model_gone(answer, study, confirmation_study, "no test score"))
    if config.registered_model and answer.registered is None:
        if kept is None:
            notes.append(_model_gone(answer, study, confirmation_study, "not registered"))
        else:
            failpoints.reached("before-registration")
            answer.registered = _registered_before(config, kept)
            if answer.registered is None:
                with phase(f"registering the chosen model as {config.registered_model}"):
                    notes += _register(config, prepared, answer, kept, tracker, parent_run_id=parent_run_id)
                failpoints.reached("after-registration")
    study.set_user_attr(ANSWER_ATTR, answer.to_dict())
    _log_answer(answer, tracker, parent_run_id)
    if left_by_earlier and kept is not None and (prepared.test is None or answer.test is not None) and (not config.registered_model or answer.registered):
        _free(kept)  # nothing more to do with it: free its disk as the invocation that kept it would have
    return answer, notes


def record_logged(study: optuna.Study, answer: Answer, parent_run_id: str) -> None:
    """The answer's metrics and the study's summary are on ``parent_run_id``: the answer is settled."""
    answer.logged_on = parent_run_id
    study.set_user_attr(ANSWER_ATTR, answer.to_dict())


def _model_gone(answer: Answer, search: optuna.Study, confirmation: optuna.Study | None, what: str) -> str:
    study, run = scored_run(answer, search, confirmation)
    which = f"confirmation run {run.number}" if study is not search else f"trial {run.number}"
    return (f"{what}: the model of {which} (the chosen configuration's) was trained by an earlier invocation and is no longer "
            f"on disk (its {BEST_MODEL_FILE} under storage.results_dir is gone)")


def _registered_before(config, kept: KeptModel) -> str | None:
    """NAME/VERSION of a version of ``registered_model`` already made from ``kept``'s run (an invocation
    killed before it recorded the registration), so the model is never registered twice."""
    from mlflow import MlflowClient

    name = config.registered_model.replace("'", "\\'")
    try:
        versions = MlflowClient(config.storage.mlflow).search_model_versions(f"name='{name}'")
    except Exception:  # noqa: BLE001 - no such model yet: nothing registered before
        return None
    # A version's run is the parent run of the invocation that registered it; the run its weights came from is a tag.
    made = [int(version.version) for version in versions if version.tags.get(mlflow_tags.SOURCE_RUN_ID) == kept.run_id]
    return f"{config.registered_model}/{min(made)}" if made else None


def _free(kept: KeptModel) -> None:
    if kept.trial_path is not None:
        for folder in Path(kept.trial_path).glob("checkpoint_*"):
            shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(kept.weights_file.parent, ignore_errors=True)


def _score(config, prepared, answer: Answer, kept: KeptModel, tracker, *, parent_run_id: str) -> list[str]:
    import tempfile
    from pathlib import Path

    from orchestrator.answer.evaluation import confusion_matrix_png, score_on_test
    from orchestrator.data.trial_settings import trial_settings

    try:
        score = score_on_test(trial_settings(prepared, keep_best_model=False), prepared.test, kept, answer.trial)
        answer.test = score.to_dict()
        tracker.log_metrics(kept.run_id, score.metrics, step=0)  # the parent run's: _log_answer
        with tempfile.TemporaryDirectory(prefix="hpo-test-") as folder:
            if not score.confusion:  # text generation
                return []
            image = confusion_matrix_png(score, prepared.label_names, Path(folder) / "test_confusion_matrix.png")
            for run_id in (parent_run_id, kept.run_id):
                tracker.log_artifacts(run_id, image.parent, "test")
        return []
    except Exception as error:  # noqa: BLE001 - the trials are recorded; say what is missing
        return [f"test score not computed: {type(error).__name__}: {error}"]


def _register(config, prepared, answer: Answer, kept: KeptModel, tracker, *, parent_run_id: str) -> list[str]:
    from orchestrator.tracking.best_model import Inference, register_best_model

    source = f"its best confirmation run (run {kept.run_id})" if answer.confirmed is not None else f"trial {kept.trial_number}"
    tags = {mlflow_tags.STUDY: config.name, mlflow_tags.SEARCH_TRIAL: str(answer.trial),
            mlflow_tags.OPTUNA_TRIAL_NUMBER: str(answer.trial),  # the study's (search) trial, as on every run
            mlflow_tags.SOURCE_RUN_ID: kept.run_id, mlflow_tags.PARENT_RUN_ID: parent_run_id,
            mlflow_tags.SEARCH_SCORE: f"{answer.search_value:.6g}"}
    if answer.confirmed is not None:
        tags[mlflow_tags.CONFIRMATION_TRIAL] = str(kept.trial_number)  # in the study NAME.confirm
        tags[mlflow_tags.CONFIRMED_MEAN] = f"{answer.confirmed['mean']:.6g}"
    for name, value in ((answer.test or {}).get("metrics") or {}).items():
        tags[f"{mlflow_tags.TAG_PREFIX}{name}"] = f"{value:.6g}"
    description = "; ".join([f"study {config.name}, search trial {answer.trial}, weights from {source}",
                             *(f"{what}: {score}" for what, score in score_lines(answer))])
    inference = Inference(max_length=config.task_data.max_length, max_new_tokens=config.task_data.max_new_tokens)
    try:
        version = register_best_model(kept, prepared.model_path, label_names=prepared.label_names, tracking_uri=config.storage.mlflow, registered_name=config.registered_model, tags=tags,
                                      task=config.task, pad_token_id=prepared.pad_token_id, inference=inference,
                                      parent_run_id=parent_run_id, description=description)
    except Exception as error:  # noqa: BLE001
        return [f"best model not registered: {type(error).__name__}: {error}"]
    answer.registered = f"{config.registered_model}/{version}"
    tracker.set_tags(parent_run_id, {mlflow_tags.REGISTERED_MODEL: answer.registered,
                                     mlflow_tags.REGISTERED_MODEL_URI: f"models:/{answer.registered}"})
    return [f"registered the chosen configuration's model as {config.registered_model} version {version} ({source})"]


def _log_answer(answer: Answer, tracker, parent_run_id: str) -> None:
    """Every score of the answer on the parent run, also those an earlier invocation measured."""
    metric = answer.metric
    metrics = {f"search_{metric}": answer.search_value, **((answer.test or {}).get("metrics") or {})}
    if answer.confirmed is not None:
        metrics.update({f"confirmed_mean_{metric}": answer.confirmed["mean"], f"confirmed_std_{metric}": answer.confirmed["std"]})
    tracker.log_metrics(parent_run_id, metrics, step=0)
    tags = {mlflow_tags.CHOSEN_TRIAL: answer.trial, mlflow_tags.ANSWER: "; ".join(f"{what}: {score}" for what, score in score_lines(answer))}
    if answer.registered:
        tags[mlflow_tags.REGISTERED_MODEL] = answer.registered
    tracker.set_tags(parent_run_id, tags)
