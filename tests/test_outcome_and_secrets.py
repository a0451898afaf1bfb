import math

from optuna.trial import TrialState

from orchestrator.run.outcome import classify
from orchestrator.secrets import mask


def _epochs(*values, final=True):
    history = [{"val_f1_macro": v, "is_final": 0} for v in values]
    history[-1]["is_final"] = int(final)
    return history


def test_completed_trial_is_valued_at_its_best_epoch():
    outcome = classify(_epochs(0.5, 0.7, 0.6), "val_f1_macro", "max", None)
    assert (outcome.state, outcome.value, outcome.mlflow_status) == (TrialState.COMPLETE, 0.7, "FINISHED")
    assert classify(_epochs(0.5, 0.3, 0.4), "val_f1_macro", "min", None).value == 0.3


def test_stopped_before_its_last_epoch_is_pruned():
    outcome = classify(_epochs(0.5, final=False), "val_f1_macro", "max", None)
    assert (outcome.state, outcome.value, outcome.mlflow_status) == (TrialState.PRUNED, None, "KILLED")


def test_errors_and_non_finite_values_fail():
    assert classify(_epochs(0.5, final=False), "val_f1_macro", "max", "RuntimeError: boom").reason == "RuntimeError: boom"
    assert classify([], "val_f1_macro", "max", None).state == TrialState.FAIL
    nan = classify(_epochs(0.5, math.nan), "val_f1_macro", "max", None)
    assert nan.state == TrialState.FAIL and "nan" in nan.reason


def test_mask_hides_passwords_and_tokens():
    assert mask("postgresql+psycopg://hpo:s3cret@db:5432/studies") == "postgresql+psycopg://hpo:***@db:5432/studies"
    assert mask("https://host/api?token=abc123&x=1") == "https://host/api?token=***&x=1"
    assert mask("sqlite:///hpo.db") == "sqlite:///hpo.db"
