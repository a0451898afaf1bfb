"""The answer's scores say what they were measured on, and its optimism is signed the same way for either direction."""

from __future__ import annotations

import pytest

from orchestrator.answer.settle import SEARCH_SCORE, TEST_SCORE, Answer, score_lines


def _answer(metric: str, mode: str, search: float, test: float) -> Answer:
    return Answer(trial=5, params={}, metric=metric, search_value=search, search_trials=4, mode=mode,  # type: ignore[arg-type]
                  test={"metrics": {"test_" + metric.removeprefix("val_"): test}, "rows": 40})


@pytest.mark.parametrize("metric, mode, search, test, optimism, difference", [
    ("val_f1_macro", "max", 0.80, 0.75, +0.05, "search − test"),  # validation overstated the model
    ("val_loss", "min", 0.30, 0.40, +0.10, "test − search"),  # validation overstated it: its loss was lower
    ("val_loss", "min", 0.40, 0.30, -0.10, "test − search"),  # the test went better than the search
])
def test_optimism_is_positive_when_the_search_score_overstates_the_model(metric, mode, search, test, optimism, difference):
    answer = _answer(metric, mode, search, test)
    assert answer.optimism == pytest.approx(optimism)
    lines = dict(score_lines(answer))
    assert lines[f"optimism of selecting on validation ({difference})"] == f"{optimism:+.4f}"
    assert lines[SEARCH_SCORE] == f"{search:.4f} (trial 5; 4 search trials completed)"
    assert lines[TEST_SCORE] == f"{test:.4f} on 40 rows"


def test_an_answer_stored_before_its_mode_was_kept_reads_as_maximised():
    stored = {"trial": 1, "params": {}, "metric": "val_f1_macro", "search_value": 0.8, "search_trials": 3}
    assert Answer.from_dict(stored).mode == "max"
