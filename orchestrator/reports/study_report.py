"""A study's report for people (`hpo report`, and the summary on the MLflow parent run): Optuna's plots, the best trials and their MLflow runs.

``render_report`` makes one self-contained HTML page (plotly.js embedded once, nothing fetched:
it opens offline and travels as a mail attachment); ``write_summary`` writes that page, each
plot as a PNG and the best trials as CSV and Markdown into a folder.
"""

from __future__ import annotations

import csv
import html
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import optuna
from optuna.trial import FrozenTrial, TrialState

from orchestrator.reports.naming import SHORT_NAMES
from orchestrator.secrets import mask
from orchestrator.storage.ranking import maximized, rank
from orchestrator.storage.trial_attrs import MLFLOW_EXPERIMENT_ID, MLFLOW_RUN_ID

if TYPE_CHECKING:
    import plotly.graph_objects as go

TOP_TRIALS = 10
STATE_ORDER = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
CAPTIONS = {
    "optimization_history": "The primary objective of every completed trial, in the order they ran, and the best so far.",
    "param_importances": "How much each parameter decided whether a trial reached the best values (PED-ANOVA).",
    "parallel_coordinate": "Each line is one completed trial: its parameters and its value.",
    "slice": "The value of each completed trial against each parameter.",
    "intermediate_values": "The value each trial reported after each epoch, PRUNED trials included.",
}


def summary_figures(study: optuna.Study) -> dict[str, go.Figure]:
    """Optuna's interactive plots of the study's primary objective; plots it cannot draw yet are left out."""
    with _quiet_warnings():
        return {name: getattr(optuna.visualization, function)(study, **kwargs) for name, (function, kwargs) in _drawable_plots(study).items()}


def write_summary(study: optuna.Study, folder: Path, mlflow_ui: str | None = None) -> list[Path]:
    """Write ``summary.html``, one PNG per plot, ``best_trials.csv`` and ``best_trials.md`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = _write_pngs(study, folder)
    page = folder / "summary.html"
    page.write_text(render_report(study, mlflow_ui), encoding="utf-8")
    header, rows = _best_table(study, best_trials(study))
    with open(folder / "best_trials.csv", "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([header, *([("" if cell is None else cell) for cell in row] for row in rows)])
    (folder / "best_trials.md").write_text(_markdown(study, header, rows), encoding="utf-8")
    return [*written, page, folder / "best_trials.csv", folder / "best_trials.md"]


def render_report(study: optuna.Study, mlflow_ui: str | None = None) -> str:
    """One self-contained HTML page: objective, trials by state, time spent, best trials, plots.

    With ``mlflow_ui`` an http(s) base URL (``http://mlflow.internal:5000``), run ids link to the
    MLflow UI; otherwise they are shown as text.
    """
    from plotly.offline import get_plotlyjs

    trials = study.get_trials(deepcopy=False)
    best = best_trials(study)
    plots = "".join(
        f'<section><p class="caption">{html.escape(CAPTIONS[name])}</p>'
        f'{figure.to_html(full_html=False, include_plotlyjs=False, default_height="480px", config={"displaylogo": False})}</section>\n'
        for name, figure in summary_figures(study).items()
    )
    title = "Pareto front" if len(study.directions) > 1 else f"Best trials (top {TOP_TRIALS}; search scores on the validation split)"
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Study {html.escape(study.study_name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
.caption, .muted {{ color: #666; }}
</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script>{get_plotlyjs()}</script>
</head><body>
<h1>Study {html.escape(study.study_name)}</h1>
<p>Objective: {html.escape(_objective_text(study))}. <span class="muted">Report written {generated} by hpo report.</span></p>
{_answer_html(study)}
<h2>Trials</h2>
{_counts_table(trials)}
<p>{html.escape(_time_text(trials, _confirmation_trials(study)))}</p>
<h2>{title}</h2>
{_best_html(study, best, mlflow_ui) if best else "<p>No trial has completed yet.</p>"}
<h2>Plots</h2>
{plots or '<p class="muted">No plot yet: the study needs completed trials.</p>'}
</body></html>
"""


def _answer_html(study: optuna.Study) -> str:
    """The chosen configuration and each of its scores, with what it was measured on."""
    from orchestrator.answer.settle import score_lines, stored_answer
    from orchestrator.reports.naming import short_params

    facts = _data_html(study, answer.metric if (answer := stored_answer(study)) is not None else _objective_names(study)[0])
    if answer is None:
        return facts
    rows = "".join(f"<tr><th>{html.escape(what)}</th><td>{html.escape(score)}</td></tr>" for what, score in score_lines(answer))
    if answer.test is None:
        rows += '<tr><th>test</th><td class="muted">none: every score here is a validation score</td></tr>'
    confusion = ""
    if answer.test is not None:
        labels = [name.removeprefix("test_f1_class.") for name in answer.test["metrics"] if name.startswith("test_f1_class.")]
        header = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
        body = "".join(f"<tr><th>{html.escape(label)}</th>{''.join(f'<td>{count}</td>' for count in counts)}</tr>"
                       for label, counts in zip(labels, answer.test["confusion"], strict=True))
        per_class = ", ".join(f"{label} {answer.test['metrics']['test_f1_class.' + label]:.3f}" for label in labels)
        confusion = (f"<p>Test F1 per class: {html.escape(per_class)}.</p>"
                     f"<table><tr><th>true \\ predicted</th>{header}</tr>{body}</table>")
    return (f"<h2>The answer: trial {answer.trial}</h2><p>{html.escape(short_params(answer.params))}</p>"
            f"<table>{rows}</table>{confusion}{facts}")


def _data_html(study: optuna.Study, metric: str) -> str:
    """The baseline and the overlap between splits (:mod:`orchestrator.reports.data_facts`), as a list."""
    from orchestrator.reports.data_facts import data_facts, fact_lines

    lines = fact_lines(data_facts(study), metric)
    return f"<p>The data:</p><ul>{''.join(f'<li>{html.escape(line)}</li>' for line in lines)}</ul>" if lines else ""


def _confirmation_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials of the study's confirmation runs (``NAME.confirm``), if it has any."""
    from orchestrator.answer.confirm import confirmation_study_name

    name = confirmation_study_name(study.study_name)
    storage = study._storage
    if name not in {summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)}:
        return []
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def plot_names(study: optuna.Study) -> list[str]:
    """The plots the study can draw now, as named in :func:`summary_figures` (cheap: nothing is drawn)."""
    return list(_drawable_plots(study))


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The top completed trials by the primary objective; with several objectives, the whole Pareto front."""
    ranked = rank(study, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return ranked if len(study.directions) > 1 else ranked[:TOP_TRIALS]


def _drawable_plots(study: optuna.Study) -> dict[str, tuple[str, dict]]:
    """name -> (the plot function's name, in optuna.visualization and in its matplotlib twin, and its keyword arguments)."""
    trials = study.get_trials(deepcopy=False)
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE and trial.params]
    primary = _primary_target(study)
    plots: dict[str, tuple[str, dict]] = {}
    if complete:
        plots["optimization_history"] = ("plot_optimization_history", primary)
    if len(complete) >= 2:
        plots["param_importances"] = ("plot_param_importances", _importance_arguments(study))
    if complete:
        plots["parallel_coordinate"] = ("plot_parallel_coordinate", primary)
        plots["slice"] = ("plot_slice", primary)
    if any(trial.intermediate_values for trial in trials):
        plots["intermediate_values"] = ("plot_intermediate_values", {})
    return plots


def _primary_target(study: optuna.Study) -> dict:
    """Plot arguments for the first objective: Optuna's defaults with one objective, an explicit target with several."""
    if len(study.directions) == 1:
        return {}
    return {"target": lambda trial: trial.values[0], "target_name": _objective_names(study)[0]}


def _importance_arguments(study: optuna.Study) -> dict:
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    if len(study.directions) == 1:
        return {"evaluator": evaluator}
    # With an explicit target PED-ANOVA takes lower as better, so a maximised objective is negated.
    sign = -1.0 if maximized(study) else 1.0
    return {"evaluator": evaluator, "target": lambda trial: sign * trial.values[0], "target_name": _objective_names(study)[0]}


@contextmanager
def _quiet_warnings() -> Iterator[None]:
    """Optuna warns that its matplotlib plots are experimental and that importances of a few
    trials are rough; neither helps the report's reader."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _write_pngs(study: optuna.Study, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display: the report is written on servers and in CI
    import matplotlib.pyplot as plt
    import numpy as np
    import optuna.visualization.matplotlib as static

    paths = []
    for name, (function, kwargs) in _drawable_plots(study).items():
        with _quiet_warnings():
            axes = getattr(static, function)(study, **kwargs)
        figure = np.ravel(axes)[0].figure  # plot_slice returns one Axes per parameter
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def _objective_names(study: optuna.Study) -> list[str]:
    if study.metric_names:
        return list(study.metric_names)
    return ["value"] if len(study.directions) == 1 else [f"objective {i}" for i in range(1, len(study.directions) + 1)]


def _objective_text(study: optuna.Study) -> str:
    parts = [f"{direction.name.lower()} {name}" for direction, name in zip(study.directions, _objective_names(study), strict=True)]
    return parts[0] if len(parts) == 1 else f"{', '.join(parts)} (the first is the primary one)"


def _counts_table(trials: list[FrozenTrial]) -> str:
    counts = Counter(trial.state.name for trial in trials)
    states = [state for state in STATE_ORDER if counts[state] or state != "WAITING"]
    head = "".join(f"<th>{state}</th>" for state in states)
    cells = "".join(f"<td>{counts[state]}</td>" for state in states)
    return f'<table class="counts"><tr>{head}<th>total</th></tr><tr>{cells}<td>{len(trials)}</td></tr></table>'


def _time_text(trials: Sequence[FrozenTrial], confirmations: Sequence[FrozenTrial] = ()) -> str:
    """Time spent by the search trials and the confirmation runs together."""
    every = [*trials, *confirmations]
    starts = [trial.datetime_start for trial in every if trial.datetime_start]
    ends = [trial.datetime_complete for trial in every if trial.datetime_complete]
    if not starts:
        return "No trial has started yet."
    busy = sum(trial.duration.total_seconds() for trial in every if trial.duration)
    ran = f"{len(trials)} search trials and {len(confirmations)} confirmation runs" if confirmations else "Trials"
    text = f"{ran} ran {_seconds_text(busy)} in total, first started {min(starts):%Y-%m-%d %H:%M}"
    if ends:
        last = max(ends)
        text += f", last ended {last:%Y-%m-%d %H:%M} ({_seconds_text((last - min(starts)).total_seconds())} wall clock)"
    return text + "."


def _seconds_text(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _best_table(study: optuna.Study, trials: list[FrozenTrial]) -> tuple[list[str], list[list]]:
    """Header and rows of plain values: rank, trial, value(s), state, duration_s, parameters, mlflow_run_id."""
    params = list(dict.fromkeys(name for trial in trials for name in trial.params))
    header = ["rank", "trial", *_objective_names(study), "state", "duration_s", *params, "mlflow_run_id"]
    rows = [
        [position, trial.number, *trial.values, trial.state.name, round(trial.duration.total_seconds()) if trial.duration else None,
         *(trial.params.get(name) for name in params), trial.user_attrs.get(MLFLOW_RUN_ID)]
        for position, trial in enumerate(trials, 1)
    ]
    return header, rows


def _display_cells(study: optuna.Study, row: list) -> list[str]:
    """A best-trials row as text: objective values to 6 significant digits, parameters to 3 (as the CLI shows them)."""
    objectives = range(2, 2 + len(study.directions))
    return [_text(cell, 6 if i in objectives else 3) for i, cell in enumerate(row)]


def _text(cell: object, digits: int) -> str:
    if cell is None:
        return ""
    return f"{cell:.{digits}g}" if isinstance(cell, float) else str(cell)


def _markdown(study: optuna.Study, header: list[str], rows: list[list]) -> str:
    if not rows:
        return f"# {study.study_name}\n\nNo trial has completed yet.\n"
    names = [SHORT_NAMES.get(name, name) for name in header]
    lines = [f"# {study.study_name}: {'Pareto front' if len(study.directions) > 1 else 'best trials'}", "",
             "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in _display_cells(study, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _best_html(study: optuna.Study, trials: list[FrozenTrial], mlflow_ui: str | None) -> str:
    header, rows = _best_table(study, trials)
    head = "".join(f"<th>{html.escape(SHORT_NAMES.get(name, name))}</th>" for name in header[:-1]) + "<th>MLflow run</th>"
    body = []
    for trial, row in zip(trials, rows, strict=True):
        cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in _display_cells(study, row)[:-1])
        body.append(f"<tr>{cells}<td>{_run_cell(study, trial, mlflow_ui)}</td></tr>")
    return f"<table><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def _run_cell(study: optuna.Study, trial: FrozenTrial, mlflow_ui: str | None) -> str:
    run_id = trial.user_attrs.get(MLFLOW_RUN_ID)
    if not run_id:
        return ""
    if not mlflow_ui or not mlflow_ui.startswith(("http://", "https://")):
        return html.escape(str(run_id))
    experiment = trial.user_attrs.get(MLFLOW_EXPERIMENT_ID) or study.user_attrs.get(MLFLOW_EXPERIMENT_ID)
    # Without the experiment id, the MLflow UI's /runs/ID route finds the run's experiment itself.
    # mask(): a password in the base URL must not travel with a mailed page.
    path = f"experiments/{quote(str(experiment))}/runs/{quote(str(run_id))}" if experiment else f"runs/{quote(str(run_id))}"
    return f'<a href="{html.escape(mask(mlflow_ui).rstrip("/"))}/#/{path}">{html.escape(str(run_id))}</a>'

