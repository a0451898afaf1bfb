"""`hpo report` and orchestrator.reports.study_report: a study's plots, best trials and MLflow links as files and one
self-contained HTML page, built from real Optuna studies in a SQLite file (no Ray, no training)."""

from __future__ import annotations

import csv
import json
import re

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.reports.study_report import plot_names, render_report, write_summary

runner = CliRunner()
HOSTILE = "<script>alert(1)</script>"  # a categorical choice: must be shown as text, never run
DISTRIBUTIONS = {
    "learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
    "unfreeze_depth": IntDistribution(1, 6),
    "pooling": CategoricalDistribution(["cls", "mean", HOSTILE]),
}
VALUES = (0.71, 0.78, 0.74, 0.91, 0.66, 0.83)  # trial 3 is the best
ALL_PLOTS = ["optimization_history", "param_importances", "parallel_coordinate", "slice", "intermediate_values"]


def _trial(study, params, values=None, state=TrialState.COMPLETE, epochs=(), attrs=None) -> None:
    study.enqueue_trial(params)
    trial = study.ask(DISTRIBUTIONS)
    for step, value in enumerate(epochs, 1):
        trial.report(value, step)
    for key, value in (attrs or {}).items():
        trial.set_user_attr(key, value)
    study.tell(trial, values, state=state)


def _params(i: int) -> dict:
    return {"learning_rate": 1e-5 * 3 ** (i % 5), "unfreeze_depth": 1 + i % 6, "pooling": ["cls", "mean", HOSTILE][i % 3]}


@pytest.fixture(scope="module")
def db_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'studies.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.RandomSampler(seed=0)

    nightly = optuna.create_study(study_name="nightly", storage=url, direction="maximize", sampler=sampler)
    for i, value in enumerate(VALUES):
        _trial(nightly, _params(i), value, epochs=(value - 0.2, value), attrs={"mlflow_run_id": f"run-{i}"})
    _trial(nightly, _params(6), state=TrialState.PRUNED, epochs=(0.3,), attrs={"mlflow_run_id": "run-6", "state_reason": "stopped early"})
    _trial(nightly, _params(7), state=TrialState.FAIL, attrs={"state_reason": "NonFiniteLossError"})

    pareto = optuna.create_study(study_name="pareto", storage=url, directions=["maximize", "minimize"], sampler=sampler)
    pareto.set_user_attr("mlflow_experiment_id", "7")
    for i, values in enumerate(((0.80, 30.0), (0.90, 50.0), (0.70, 10.0), (0.60, 60.0), (0.85, 40.0))):  # trial 3 is dominated
        _trial(pareto, _params(i), list(values), attrs={"mlflow_run_id": f"mo-{i}"})

    single = optuna.create_study(study_name="single", storage=url, direction="minimize", sampler=sampler)
    _trial(single, _params(0), 0.5)
    optuna.create_study(study_name="empty", storage=url)
    return url


def _load(db_url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=db_url)


@pytest.fixture(scope="module")
def nightly_page(db_url) -> str:
    return render_report(_load(db_url, "nightly"), "http://mlflow.example:5000/")


def test_write_summary(db_url, tmp_path):
    folder = tmp_path / "summary"
    written = write_summary(_load(db_url, "nightly"), folder)

    assert sorted(path.name for path in written) == sorted([f"{name}.png" for name in ALL_PLOTS] + ["summary.html", "best_trials.csv", "best_trials.md"])
    assert sorted(written) == sorted(folder.iterdir())
    for png in folder.glob("*.png"):
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 5_000, png.name
    rows = list(csv.DictReader((folder / "best_trials.csv").open()))
    assert [row["trial"] for row in rows] == ["3", "5", "1", "2", "0", "4"]
    assert rows[0]["rank"] == "1" and float(rows[0]["value"]) == 0.91 and rows[0]["mlflow_run_id"] == "run-3"
    assert rows[0]["state"] == "COMPLETE" and rows[0]["duration_s"] != "" and rows[0]["pooling"] == "cls"
    markdown = (folder / "best_trials.md").read_text().splitlines()
    assert markdown[2].startswith("| rank | trial | value | state | duration_s | lr | unfreeze | pooling |")
    assert markdown[4].startswith("| 1 | 3 | 0.91 | COMPLETE |") and markdown[4].endswith("| run-3 |")
    assert "Study nightly" in (folder / "summary.html").read_text()


def test_report_is_self_contained(nightly_page):
    from plotly.offline import get_plotlyjs

    assert nightly_page.count(get_plotlyjs()) == 1
    ours = nightly_page.replace(get_plotlyjs(), "")  # plotly.js mentions URLs in its code; it never loads them
    assert not re.search(r"<script[^>]*\ssrc=", ours) and "<link" not in ours
    assert ours.count('class="plotly-graph-div"') == len(ALL_PLOTS)
    external = re.findall(r'(?:src|href)="([^"]*)"', ours)
    assert external and all(url.startswith("http://mlflow.example:5000/#/runs/run-") for url in external)


def test_report_content(nightly_page):
    assert "<h1>Study nightly</h1>" in nightly_page and "Objective: maximize value." in nightly_page
    counts = "<tr><th>COMPLETE</th><th>PRUNED</th><th>FAIL</th><th>RUNNING</th><th>total</th></tr><tr><td>6</td><td>1</td><td>1</td><td>0</td><td>8</td></tr>"
    assert counts in nightly_page
    assert "Trials ran " in nightly_page and "wall clock" in nightly_page
    first_row = re.search(r"<tr><td>1</td>.*?</tr>", nightly_page).group(0)
    assert "<td>3</td><td>0.91</td><td>COMPLETE</td>" in first_row
    assert '<a href="http://mlflow.example:5000/#/runs/run-3">run-3</a>' in first_row
    assert HOSTILE not in nightly_page and "&lt;script&gt;alert(1)&lt;/script&gt;" in nightly_page


def test_pareto_front_and_experiment_links(db_url, tmp_path):
    study = _load(db_url, "pareto")
    page = render_report(study, "https://mlflow.example")
    assert "Pareto front" in page and "maximize objective 1, minimize objective 2 (the first is the primary one)" in page
    table = page[page.index("<h2>Pareto front</h2>"):page.index("<h2>Plots</h2>")]
    assert re.findall(r"<tr><td>\d+</td><td>(\d+)</td>", table) == ["1", "4", "0", "2"]  # by the primary objective; 3 is dominated
    assert '<a href="https://mlflow.example/#/experiments/7/runs/mo-1">mo-1</a>' in table

    written = write_summary(study, tmp_path)
    assert {path.name for path in written} >= {f"{name}.png" for name in ALL_PLOTS[:4]}  # no epochs reported: no intermediate values
    header = next(csv.reader((tmp_path / "best_trials.csv").open()))
    assert header[:4] == ["rank", "trial", "objective 1", "objective 2"]


def test_run_ids_are_text_without_an_mlflow_ui(db_url):
    from plotly.offline import get_plotlyjs

    page = render_report(_load(db_url, "nightly"), None).replace(get_plotlyjs(), "")
    assert "<td>run-3</td>" in page and "href=" not in page


def test_studies_too_small_to_plot_still_get_a_report(db_url, tmp_path):
    single = _load(db_url, "single")
    assert plot_names(single) == ["optimization_history", "parallel_coordinate", "slice"]
    assert sorted(path.name for path in write_summary(single, tmp_path / "single") if path.suffix == ".png") == [
        "optimization_history.png", "parallel_coordinate.png", "slice.png"]
    empty = _load(db_url, "empty")
    assert plot_names(empty) == []
    page = render_report(empty, None)
    assert "No trial has completed yet." in page and "No trial has started yet." in page


def test_cli_writes_the_report(db_url, tmp_path):
    path = tmp_path / "report.html"
    result = runner.invoke(app, ["report", "nightly", "--db", db_url, "--out", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["report"] == str(path) and summary["trials"] == 8 and summary["plots"] == ALL_PLOTS
    assert summary["states"] == {"COMPLETE": 6, "PRUNED": 1, "FAIL": 1}
    assert path.stat().st_size == summary["bytes"] and "<h1>Study nightly</h1>" in path.read_text()

    result = runner.invoke(app, ["report", "single", "--db", db_url, "--out", str(path)])
    assert result.exit_code == 0 and result.output.strip() == f"wrote the report of single (1 trials, 3 plots) to {path}"


@pytest.mark.parametrize("args, message", [
    (["nope"], "STUDY: 'nope' is invalid: no such study; studies here: empty, nightly, pareto, single"),
    (["nightly", "--db", "sqlite:///{tmp}/absent.db"], "no study database there"),
    (["nightly", "--mlflow-ui", "sqlite:///mlruns.db"], "--mlflow-ui: 'sqlite:///mlruns.db' is invalid: give the MLflow UI's http(s) address"),
])
def test_cli_errors_write_nothing(db_url, tmp_path, args, message):
    path = tmp_path / "report.html"
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    result = runner.invoke(app, ["report", *args[:1], "--db", db_url, "--out", str(path), *args[1:]])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(tmp_path.iterdir()) == []


def test_the_report_shows_the_baseline_and_overlap_and_counts_the_confirmation_runs(tmp_path):
    from datetime import datetime

    from optuna.trial import FrozenTrial

    from orchestrator.storage.trial_attrs import ANSWER_ATTR, SPLITS_ATTR

    url = f"sqlite:///{tmp_path / 'answered.db'}"

    def ran(number: int, value: float, start: str, end: str) -> FrozenTrial:
        return FrozenTrial(number=number, state=TrialState.COMPLETE, value=value, datetime_start=datetime.fromisoformat(start),
                           datetime_complete=datetime.fromisoformat(end), params={"learning_rate": 1e-4},
                           distributions={"learning_rate": DISTRIBUTIONS["learning_rate"]}, user_attrs={}, system_attrs={},
                           intermediate_values={}, trial_id=number)

    search = optuna.create_study(study_name="answered", storage=url, direction="maximize")
    search.add_trial(ran(0, 0.80, "2026-01-01 10:00", "2026-01-01 10:10"))
    search.set_user_attr(SPLITS_ATTR, {"rows": {"train": 900, "validation": 100, "test": 100}, "overlap": {"validation": 25, "test": 18},
                                       "baseline": {"val_f1_macro": 0.2037}})
    search.set_user_attr(ANSWER_ATTR, {"trial": 0, "params": {"learning_rate": 1e-4}, "metric": "val_f1_macro", "search_value": 0.8, "search_trials": 1})
    optuna.create_study(study_name="answered.confirm", storage=url, direction="maximize").add_trial(ran(0, 0.75, "2026-01-01 11:00", "2026-01-01 12:30"))
    page = render_report(_load(url, "answered"))
    assert "1 search trials and 1 confirmation runs ran 1 h 40 min in total" in page
    assert "last ended 2026-01-01 12:30 (2 h 30 min wall clock)" in page
    assert "majority-class baseline (validation): val_f1_macro 0.2037" in page
    assert "25 validation row(s) also in the training split" in page and "18 test row(s) also in the training split" in page
