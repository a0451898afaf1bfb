"""The inspection commands, which read a study database: ``hpo studies``, ``trials``, ``best``,
``export``, ``report``, and ``hpo evaluate`` (the study's model on a labelled file)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from orchestrator.cli.app import (
    DbOpt,
    DebugOpt,
    JsonOpt,
    StudyArg,
    app,
    quiet_libraries,
)
from orchestrator.cli.console import err, one_line_errors, out, print_json
from orchestrator.cli.output import cell
from orchestrator.reports.naming import SHORT_NAMES
from orchestrator.secrets import mask, remember_url
from orchestrator.sweep import default_stores


def _json_or(rows, as_json: bool) -> bool:
    if as_json:
        print_json(rows)
    return as_json


@app.command()
def studies(*, db: str = DbOpt, as_json: bool = JsonOpt, debug: bool = DebugOpt) -> None:
    """List the studies in a study database: trials by state, best value, last run."""
    from orchestrator.reports import queries

    with one_line_errors(debug, as_json):
        quiet_libraries(debug)
        rows = queries.studies(queries.open_for_reading(db))
        if _json_or(rows, as_json):
            return
        table = Table(title=f"Studies in {mask(db)}", title_justify="left")
        for column in ("study", "dir", "complete", "pruned", "fail", "running", "best", "last run"):
            table.add_column(column, justify="left" if column in ("study", "last run") else "right", no_wrap=True)
        for row in rows:
            counts = row["trials"]
            best = "-" if row["best_value"] is None else f"{row['best_value']:.4f}"
            table.add_row(row["study"], row["direction"], *(str(counts.get(s, 0)) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")), best, row["last_run"] or "-")
        out.print(table)


@app.command()
def trials(
    study: str = StudyArg,
    *,
    db: str = DbOpt,
    state: list[str] | None = typer.Option(None, "--state", help="Only trials in this state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING); repeatable."),
    sort: str = typer.Option("number", "--sort", help="number | value (best first) | duration (longest first)."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """List a study's trials: state, value, parameters, duration, MLflow run id."""
    from orchestrator.reports import queries

    with one_line_errors(debug, as_json):
        quiet_libraries(debug)
        rows = queries.trials(queries.open_for_reading(db), study, state, sort)
        if _json_or(rows, as_json):
            return
        names = sorted({name for row in rows for name in row["params"]})
        table = Table(title=f"{study}: {len(rows)} trials", title_justify="left")
        for column in ("#", "state", "value", *(SHORT_NAMES.get(n, n) for n in names), "time", "mlflow run", "reason"):
            table.add_column(column, justify="left" if column in ("state", "mlflow run", "reason") else "right", no_wrap=column != "reason")
        for row in rows:
            value = "-" if row["value"] is None else f"{row['value']:.4f}"
            duration = "-" if row["duration_s"] is None else f"{row['duration_s']:.0f}s"
            reason = "" if row["state"] == "COMPLETE" else (row["reason"] or "")
            table.add_row(str(row["number"]), row["state"], value, *(cell(row["params"].get(n, "")) for n in names),
                          duration, (row["mlflow_run_id"] or "")[:12], reason)
        out.print(table)


@app.command()
def best(
    study: str = StudyArg,
    *,
    db: str = DbOpt,
    top: int = typer.Option(1, "--top", min=1, help="How many of the best trials."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Print the best trials' parameters as YAML, ready to paste into a training config."""
    import yaml

    from orchestrator.reports import queries

    with one_line_errors(debug, as_json):
        quiet_libraries(debug)
        rows = queries.best(queries.open_for_reading(db), study, top)
        if _json_or(rows, as_json):
            return
        if not rows:
            err.print(f"[yellow]{study} has no completed trial yet.[/yellow]")
            return
        if len(rows[0]["values"]) > 1:
            print(f"# {study}: the Pareto front, {len(rows)} trial(s), best first by the primary objective")
        from orchestrator.answer.settle import Answer, score_lines
        from orchestrator.reports.data_facts import fact_lines

        for position, row in enumerate(rows):
            shown = ", ".join(f"{value:.6g}" for value in row["values"])
            if "answer" in row:
                answer = Answer.from_dict(row["answer"])
                print(f"# {study} trial {row['number']}: the chosen configuration")
                for what, score in score_lines(answer):
                    print(f"#   {what}: {score}")
            else:
                print(f"# {study} trial {row['number']}: value{'s' * (len(row['values']) > 1)} {shown}" + (f" ({row['measured_on']})" if "measured_on" in row else ""))
            if position == 0 and "data" in row:
                metric = row["answer"]["metric"] if "answer" in row else next(iter(row["data"].get("baseline") or {}), "")
                for line in fact_lines(row["data"], metric):
                    print(f"#   {line}")
            if row["fixed"]:
                print(f"#   fixed in the sweep's search space: {', '.join(row['fixed'])}")
            print(yaml.safe_dump(row["configuration"], sort_keys=False), end="")


@app.command()
def export(
    study: str = StudyArg,
    *,
    db: str = DbOpt,
    fmt: str = typer.Option("csv", "--format", help="csv | json | parquet"),
    out_path: Path | None = typer.Option(None, "--out", help="File to write (default: STUDY.FORMAT)."),
    debug: bool = DebugOpt,
) -> None:
    """Write every trial of a study (state, value, parameters, attributes, times) to a CSV, JSON or Parquet file."""
    from orchestrator.reports import queries
    from orchestrator.run.targets import check_output_file

    with one_line_errors(debug, False):
        quiet_libraries(debug)
        path = out_path or Path(f"{study}.{fmt}")
        check_output_file(path, "--out")
        count = queries.export(queries.open_for_reading(db), study, fmt, path)
        out.print(f"wrote {count} trials of {study} to {path}", highlight=False)


@app.command()
def report(
    study: str = StudyArg,
    *,
    out_path: Path = typer.Option(..., "--out", help="HTML file to write, e.g. report.html (its folder must exist)."),
    db: str = DbOpt,
    mlflow_ui: str | None = typer.Option(None, "--mlflow-ui", callback=remember_url, help="Base URL of the MLflow UI, e.g. http://mlflow.internal:5000: run ids become links to their runs."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Write one self-contained HTML page about a study, to open offline or mail.

    It shows the objective, trials by state, time spent, the best trials (or the Pareto front) with their MLflow runs, and Optuna's plots: history, parameter importances, parallel coordinates, slices and per-epoch values. plotly.js is embedded, so the page needs no network.
    """
    from orchestrator.errors import ConfigError
    from orchestrator.reports import queries
    from orchestrator.reports.study_report import plot_names, render_report
    from orchestrator.run.targets import check_output_file

    with one_line_errors(debug, as_json):
        quiet_libraries(debug)
        if mlflow_ui is not None and not mlflow_ui.startswith(("http://", "https://")):
            raise ConfigError("--mlflow-ui", mlflow_ui, "give the MLflow UI's http(s) address, e.g. http://127.0.0.1:5000")
        check_output_file(out_path, "--out")
        loaded = queries.load_study(queries.open_for_reading(db), study)
        page = render_report(loaded, mlflow_ui)
        out_path.write_text(page, encoding="utf-8")
        trials = loaded.get_trials(deepcopy=False)
        plots = plot_names(loaded)
        summary = {
            "ok": True,
            "report": str(out_path),
            "study": study,
            "trials": len(trials),
            "states": dict(Counter(trial.state.name for trial in trials)),
            "plots": plots,
            "bytes": len(page.encode()),
        }
        if _json_or(summary, as_json):
            return
        out.print(f"wrote the report of {study} ({len(trials)} trials, {len(plots)} plots) to {out_path}", highlight=False)


@app.command()
def evaluate(
    study: str = StudyArg,
    *,
    data: Path = typer.Option(..., "--data", help="Labelled file to score on (CSV, TSV, JSON Lines or Parquet), e.g. a new month's data."),
    db: str = DbOpt,
    mlflow_uri: str = typer.Option(default_stores.MLFLOW, "--mlflow", envvar="HPO_MLFLOW", callback=remember_url, help="MLflow tracking URI holding the registry (the sweep's storage.mlflow). Env: HPO_MLFLOW."),
    model_uri: str | None = typer.Option(None, "--model-uri", help="Score this MLflow model instead (models:/NAME/VERSION, runs:/RUN_ID/model, a path); default: the study's registered model."),
    text_column: str | None = typer.Option(None, "--text-column", help="Text column (default: the sweep's data.text_column, else text)."),
    label_column: str | None = typer.Option(None, "--label-column", help="Label column (default: the sweep's data.label_column, else label)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Texts per forward pass."),
    max_length: int | None = typer.Option(None, "--max-length", min=1, help="Truncate texts to this many tokens (default: the sweep's data.max_length)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Score the study's registered model (or --model-uri) on a labelled file; writes nothing to the study or MLflow.

    Prints accuracy, macro precision, recall and F1, per-class F1 and rows, titled with what was measured. Text classification only for now.
    """
    from orchestrator.reports.evaluate import evaluate_file, print_evaluation

    with one_line_errors(debug, as_json):
        quiet_libraries(debug)
        result = evaluate_file(db, study, data, mlflow_uri=mlflow_uri, model_uri=model_uri, text_column=text_column, label_column=label_column,
                               batch_size=batch_size, max_length=max_length, device=device)
        if not _json_or({"ok": True, **result.to_dict()}, as_json):
            print_evaluation(result, out)
