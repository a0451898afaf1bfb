"""The README shows what `make demo` prints for its seed.

`make demo-record` (bench/demo_record.py) runs the demo from a clean state and records its result
in tests/fixtures/demo_result.json; these tests fail when the README's output block or prose no
longer says what that record says, when the demo's sweep or search space changed since it was
recorded, and (slow) when the code no longer computes what it recorded. Then run
`make demo-record`, update the prose it names, and commit the fixture and the README together.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from bench.demo_record import DEMO, FIXTURE, MARKER, README, demo_fingerprint, printed, readme_block
from orchestrator.sweep.config import load_sweep, parse_sweep

REFRESH = "the demo's record is stale: run `make demo-record` (several minutes), update the README's prose, commit both"


@pytest.fixture(scope="module")
def fixture() -> dict:
    if not FIXTURE.is_file():
        pytest.fail(f"{FIXTURE.relative_to(README.parent)} is missing; {REFRESH}")
    return json.loads(FIXTURE.read_text())


def _facts(fixture: dict) -> tuple[set[str], set[str]]:
    """The trial numbers and the 4-decimal scores the demo printed or recorded (every search trial's too)."""
    result, answer = fixture["result"], fixture["result"]["answer"]
    trials = {str(result["best"]["number"]), str(answer["trial"]), *fixture["confirmations"]}
    scores_of_trials = {f"{trial['value']:.4f}" for trial in fixture["trials"] if trial["value"] is not None}
    scores = {f"{result['best']['value']:.4f}", f"{answer['search_value']:.4f}", f"{answer['confirmed']['mean']:.4f}", *scores_of_trials}
    scores |= {f"{sum(values) / len(values):.4f}" for values in fixture["confirmations"].values()}
    scores |= {f"{value:.4f}" for values in fixture["confirmations"].values() for value in values}
    metric = "test_" + answer["metric"].removeprefix("val_")
    test = answer["test"]["metrics"][metric]
    scores |= {f"{test:.4f}", f"{answer['search_value'] - test:.4f}", f"{result['best']['value'] - test:.4f}"}
    return trials, scores


def test_the_record_is_of_the_demo_as_it_is_now(fixture):
    assert fixture["demo_sha256"] == demo_fingerprint(), f"sweeps/demo.yaml or its search space changed; {REFRESH}"


def test_the_readme_block_is_what_hpo_run_prints_for_the_recorded_result(fixture):
    expected = printed(fixture)
    assert readme_block(README.read_text()) == expected, f"README.md's demo block differs from what the demo printed; {REFRESH}\n\n{expected}"


def test_the_readme_prose_cites_only_the_recorded_trials_and_scores(fixture):
    readme = README.read_text()
    prose = readme[readme.index(MARKER):].split("\n```\n", 2)[2].split("\n\n")[0]  # the paragraph after the block
    trials, scores = _facts(fixture)
    cited_trials, cited_scores = set(re.findall(r"trial (\d+)", prose)), set(re.findall(r"\b0\.\d{4}\b", prose))
    assert cited_trials <= trials and cited_scores <= scores, f"{prose}\ncites trials {cited_trials - trials} or scores {cited_scores - scores} the demo did not print; {REFRESH}"
    answer = fixture["result"]["answer"]
    assert f"trial {answer['trial']}" in prose and f"{answer['test']['metrics']['test_f1_macro']:.4f}" in prose
    measured = next(paragraph for paragraph in readme.split("\n\n") if "Measured on the demo" in paragraph)
    assert set(re.findall(r"\b0\.\d{4}\b", measured)) <= scores and set(re.findall(r"trial (\d+)", measured)) <= trials, measured


def test_the_first_trials_are_those_the_sampler_proposes_for_the_seed(fixture, tmp_path):
    """The startup trials depend only on the sampler's seed and the space: a change there shows at once."""
    import optuna

    from orchestrator.search.searcher import StudySearcher
    from orchestrator.storage.study import open_study

    config = load_sweep(DEMO)
    study = open_study(config, optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}"))
    searcher = StudySearcher(study, config.search_space, config.objective.metric, config.objective.mode)
    recorded = {trial["number"]: trial["params"] for trial in fixture["trials"]}
    for number in range(config.budget.max_concurrent):  # asked before any trial has a value
        assert searcher.suggest(f"t{number}") == {**config.search_space.fixed, **recorded[number]}, REFRESH


def test_the_readme_sweep_file_is_the_demo_with_every_section():
    readme = README.read_text()
    block = re.search(r"`sweeps/demo\.yaml`, with every section.*?\n```yaml\n(.*?)\n```", readme, re.S).group(1)  # type: ignore[union-attr]
    shown = parse_sweep(yaml.safe_load(block), DEMO.parent)
    assert shown.model_dump() == load_sweep(DEMO).model_dump()
    from orchestrator.sweep.config import SweepConfig
    from orchestrator.sweep.sweep_sections import DataConfig

    named = set(re.findall(r"^\s*#?\s*(\w+):", block, re.M))
    sections = set(SweepConfig.model_fields)
    splits = {"validation", "test", "split_column", "split_seed", "train_size", "val_size", "test_size"} & set(DataConfig.model_fields)
    assert sections - named == set() and splits - named - {"split_column"} == set() and "split_column" in block


@pytest.mark.slow
def test_the_code_still_scores_the_demos_first_trial_as_recorded(fixture):
    """Trial 0 of the demo, trained in this process as a worker trains it (frozen-layer cache included),
    scores what the record says: a change in the training's numbers shows without the whole demo."""
    import torch

    from orchestrator.data.frozen_layers import with_frozen_cache
    from orchestrator.data.trial_settings import trial_settings
    from orchestrator.run.runner import validate
    from trials.finetune import fine_tune
    from trials.hyperparameters import Hyperparameters
    from trials.result_keys import INTERIM

    config = load_sweep(DEMO)
    prepared, _ = with_frozen_cache(validate(config))
    first = next(trial for trial in fixture["trials"] if trial["number"] == 0)
    reports: list[dict] = []
    threads = torch.get_num_threads()
    try:
        fine_tune(trial_settings(prepared, keep_best_model=False), Hyperparameters.from_mapping({**config.search_space.fixed, **first["params"]}),
                  prepared.data, lambda metrics, **_: reports.append(metrics))
    finally:
        torch.set_num_threads(threads)
    scores = [report[config.objective.metric] for report in reports if not report.get(INTERIM)]
    assert max(scores) == pytest.approx(first["value"], abs=5e-4), REFRESH


def test_the_fixture_says_how_it_was_made(fixture):
    assert fixture["command"].startswith("HF_HUB_OFFLINE=1 .venv/bin/hpo run sweeps/demo.yaml --json")
    assert Path(README).is_file() and fixture["machine"]["cpus"] >= 1
