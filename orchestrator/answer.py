"""The sweep's answer: the chosen configuration, and each of its scores with what it was measured on.

- **search score**: the best validation score of the search (one training seed, chosen as the best
  of many: optimistic by construction);
- **confirmed**: the mean ± std of its validation scores over new training seeds (``confirm``);
- **test**: its best confirmed run (or, without confirmation, its search trial) scored once on the
  test split, which no trial, sampler or scheduler ever saw.

The answer is kept in the search study (user attribute :data:`ANSWER_ATTR`), so ``hpo best``,
``hpo report`` and the next invocation read it from the study database.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import optuna

from orchestrator.best_model import KeptModel
from orchestrator.confirm import Confirmed, confirmed
from orchestrator.mlflow_tags import TAG_PREFIX
from orchestrator.phases import phase
from orchestrator.result import rank
from trials.objective import Mode, mode_of

ANSWER_ATTR = "hpo_answer"

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
    search's best (on a tie, trial ``prefer``: the one whose model this invocation kept)."""
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


def model_to_score(answer: Answer, search_kept: KeptModel | None, confirm_kept: dict) -> KeptModel | None:
    """The chosen configuration's model trained in this invocation, if any: its best confirmation
    run's, or (without confirmation) its search trial's."""
    if answer.confirmed is not None:
        return confirm_kept.get(answer.trial)
    return search_kept if search_kept is not None and search_kept.trial_number == answer.trial else None


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


def settle_answer(config, prepared, study: optuna.Study, recorder, confirmation, tracker, parent_run_id: str) -> tuple[Answer | None, list[str]]:
    """Choose, score on the test split when the chosen model is at hand, register it, and record the
    answer in the study and on the MLflow parent run. Failures become notes: the trials are saved."""
    from orchestrator.confirm import open_confirmation_study

    if config.multi_objective:
        return None, []
    confirmation_study = confirmation.study if confirmation is not None else (
        open_confirmation_study(study, config.sampler.seed) if config.confirm.top_k else None)
    answer, _ = choose(study, confirmation_study, config.objective.metric, prefer=recorder.kept.trial_number if recorder.kept else None)
    if answer is None:
        return None, []
    previous = stored_answer(study)
    same_choice = previous is not None and previous.trial == answer.trial
    kept = model_to_score(answer, recorder.kept, confirmation.recorder.kept_models if confirmation is not None else {})
    if kept is not None:  # rebuilt with what its trial ran with: the fixed values too (method: lora needs its adapters)
        kept = replace(kept, params={**config.search_space.fixed, **kept.params})
    notes: list[str] = []
    if prepared.test is not None:
        if kept is not None:
            with phase(f"scoring the chosen configuration (trial {answer.trial}) on the test split, {len(prepared.test)} rows"):
                notes += _score(config, prepared, answer, kept, tracker, parent_run_id)
        elif same_choice and previous is not None and previous.test is not None:
            answer.test = previous.test
        else:
            notes.append("no test score yet: the chosen configuration's model was trained by an earlier invocation; run again to score it")
    answer.registered = previous.registered if same_choice and previous is not None else None
    if config.registered_model and kept is not None and answer.registered is None:
        with phase(f"registering the chosen model as {config.registered_model}"):
            notes += _register(config, prepared, answer, kept, tracker, parent_run_id)
    study.set_user_attr(ANSWER_ATTR, answer.to_dict())
    _log_answer(answer, tracker, parent_run_id)
    return answer, notes


def _score(config, prepared, answer: Answer, kept: KeptModel, tracker, parent_run_id: str) -> list[str]:
    import tempfile
    from pathlib import Path

    from orchestrator.evaluation import confusion_matrix_png, score_on_test
    from orchestrator.tuning import trial_settings

    try:
        score = score_on_test(trial_settings(prepared, keep_best_model=False), prepared.test, kept, answer.trial)
        answer.test = score.to_dict()
        for run_id in (parent_run_id, kept.run_id):
            tracker.log_metrics(run_id, score.metrics, step=0)
        with tempfile.TemporaryDirectory(prefix="hpo-test-") as folder:
            if not score.confusion:  # text generation
                return []
            image = confusion_matrix_png(score, prepared.label_names, Path(folder) / "test_confusion_matrix.png")
            for run_id in (parent_run_id, kept.run_id):
                tracker.log_artifacts(run_id, image.parent, "test")
        return []
    except Exception as error:  # noqa: BLE001 - the trials are recorded; say what is missing
        return [f"test score not computed: {type(error).__name__}: {error}"]


def _register(config, prepared, answer: Answer, kept: KeptModel, tracker, parent_run_id: str) -> list[str]:
    from orchestrator.best_model import register_best_model

    tags = {f"{TAG_PREFIX}study": config.name, f"{TAG_PREFIX}search_score": f"{answer.search_value:.6g}"}
    if answer.confirmed is not None:
        tags[f"{TAG_PREFIX}confirmed_mean"] = f"{answer.confirmed['mean']:.6g}"
    for name, value in ((answer.test or {}).get("metrics") or {}).items():
        tags[f"{TAG_PREFIX}{name}"] = f"{value:.6g}"
    try:
        version = register_best_model(kept, prepared.model_path, prepared.label_names, config.storage.mlflow, config.registered_model, tags=tags,
                                      task=config.task, pad_token_id=prepared.pad_token_id)
    except Exception as error:  # noqa: BLE001
        return [f"best model not registered: {type(error).__name__}: {error}"]
    answer.registered = f"{config.registered_model}/{version}"
    tracker.set_tags(parent_run_id, {f"{TAG_PREFIX}registered_model": answer.registered})
    source = f"its best confirmation run (run {kept.run_id})" if answer.confirmed is not None else f"trial {kept.trial_number}"
    return [f"registered the chosen configuration's model as {config.registered_model} version {version} ({source})"]


def _log_answer(answer: Answer, tracker, parent_run_id: str) -> None:
    metric = answer.metric
    metrics = {f"search_{metric}": answer.search_value}
    if answer.confirmed is not None:
        metrics.update({f"confirmed_mean_{metric}": answer.confirmed["mean"], f"confirmed_std_{metric}": answer.confirmed["std"]})
    tracker.log_metrics(parent_run_id, metrics, step=0)
    tracker.set_tags(parent_run_id, {f"{TAG_PREFIX}chosen_trial": answer.trial, f"{TAG_PREFIX}answer": "; ".join(f"{what}: {score}" for what, score in score_lines(answer))})
