"""A sweep's result as ``hpo run`` shows it: to people, and to scripts.

:func:`print_result` prints what the run did, the best trials (or the Pareto front) as a table,
the chosen configuration with each of its scores, and the commands that open the results;
:func:`run_summary` is the same run as the document ``--json-summary`` writes for schedulers.
:func:`from_here` shows a database URL as typed in the working directory, :func:`cell` a value as
a table cell.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.table import Table

from orchestrator.cli.console import out
from orchestrator.exit_codes import ExitStatus
from orchestrator.reports.naming import SHORT_NAMES, short_params


def run_summary(result) -> dict:
    """What changed since the last run: for schedulers and for the morning's reader."""
    return {
        "study": result.study_name,
        "exit_status": result.exit_status,
        "trials_this_run": result.trials_this_run,
        "study_trials": result.study_trials,
        "metric": result.metric,
        "best_before": result.best_before,
        "best_after": result.best.value if result.best else None,
        "new_best": result.new_best,
        "best_trial": result.best.number if result.best else None,
        "duration_s": round(result.duration_s, 1),
        "notes": result.notes,
        "mlflow_parent_run_id": result.parent_run_id,
        "answer": result.answer,
        "splits": result.splits,
    }


def print_result(result) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.trials_this_run.items())) or "no trials"
    total = sum(result.study_trials.values())
    ended = "" if result.exit_status == ExitStatus.OK else f" [yellow]ended: {result.exit_status}[/yellow];"
    out.print(f"\n[bold]{result.study_name}[/bold]: this run {counts};{ended} the study now has {total} trials ({result.duration_s:.0f}s)")
    if result.best is not None and result.best_before is not None:
        change = "[green]new best[/green]" if result.new_best else "no new best"
        out.print(f"Since the last run: best {result.metric} {result.best.value:.4f} (was {result.best_before:.4f}), {change}")
    if result.best is None:
        out.print("[yellow]No trial has completed yet.[/yellow]")
    else:
        objectives = result.objectives or [result.metric]
        title = f"Pareto front of {', '.join(objectives)}" if len(objectives) > 1 else f"Best trials by {result.metric} ({result.mode}): search scores on the validation split"
        table = Table(title=title, title_justify="left")
        table.add_column("trial", justify="right", no_wrap=True)
        for objective in objectives:
            table.add_column(objective, justify="right", no_wrap=True)
        names = list(dict.fromkeys(name for trial in result.top for name in trial.params))
        for name in names:
            table.add_column(SHORT_NAMES.get(name, name), justify="right", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        for trial in result.top:
            cells = [cell(trial.params.get(name, "-")) for name in names]
            values = [cell(value) if abs(value) >= 1000 else f"{value:.4f}" for value in (trial.values or [trial.value])]
            table.add_row(str(trial.number), *values, *cells, f"{trial.duration_s or 0:.0f}s")
        out.print(table)
        baseline = result.baseline.get(result.metric)
        if baseline is not None:
            out.print(f"Best search {result.metric} (validation) {result.best.value:.4f} vs majority-class baseline {baseline:.4f}")
        _print_answer(result)
    mlflow_uri, study_db = shlex.quote(from_here(result.mlflow_uri)), shlex.quote(from_here(result.study_db))
    out.print("\nLook at the results (run from this folder):")
    runs = f"#/experiments/{result.mlflow_experiment_id}/runs" + (f"/{result.parent_run_id}" if result.parent_run_id else "")
    out.print(f"  mlflow ui --backend-store-uri {mlflow_uri}   # then open http://127.0.0.1:5000/{runs}", highlight=False, soft_wrap=True)
    out.print(f"  optuna-dashboard {study_db}", highlight=False)
    out.print(f"  optuna trials --study-name {result.study_name} --storage {study_db}", highlight=False)
    out.print(f"  hpo report {result.study_name} --db {study_db} --out report.html   # one page to share", highlight=False, soft_wrap=True)


def from_here(url: str) -> str:
    """A SQLite URL that finds its file from the working directory, wherever the sweep file is (it
    made the path absolute): sqlite:///hpo.db for a file below it, else the absolute path; any other
    URL as it is. The commands print it quoted for the shell where it needs quotes (spaces, ``?``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        relative = Path(parsed.database).relative_to(Path.cwd()) if parsed.get_backend_name() == "sqlite" and parsed.database else None
    except (ArgumentError, ValueError):  # not a URL (an MLflow server), or a file elsewhere
        return url
    return parsed.set(database=str(relative)).render_as_string(hide_password=False) if relative is not None else url


def _print_answer(result) -> None:
    """The chosen configuration and each of its scores, saying what it was measured on."""
    from orchestrator.answer.settle import Answer, score_lines

    if result.answer is None:
        return
    answer = Answer.from_dict(result.answer)
    out.print(f"\n[bold]The answer[/bold]: trial {answer.trial} ({short_params(answer.params)})", highlight=False, soft_wrap=True)
    lines = score_lines(answer)
    width = max(len(what) for what, _ in lines)
    for what, score in lines:
        out.print(f"  {what:<{width}}  [bold]{score}[/bold]", highlight=False, soft_wrap=True)
    if answer.test is None:
        out.print("  [yellow]no test score[/yellow]: every score above is a validation score; give data.test (or more rows) for one the search never saw", highlight=False, soft_wrap=True)


def cell(value) -> str:
    """A parameter's or metric's value as a table cell: a float to three significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
