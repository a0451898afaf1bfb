"""The ``hpo`` command line: a thin layer over :mod:`orchestrator.api`.

Exit codes (:class:`orchestrator.exit_codes.ExitCode`): 0 success; 1 the sweep failed (every trial
failed, or an unexpected error); 2 invalid input (sweep file, model, data, where the run writes,
Ray address, command line), nothing written; 3 another invocation holds the study; 4 the
--timeout budget was spent before any trial started; 130 interrupted (SIGINT or SIGTERM; a
second signal exits at once). Every error is one line on stderr naming the field or option, the
value and the fix.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from orchestrator.cli_console import err, one_line_errors, out, print_json
from orchestrator.cli_output import cell, print_result, run_summary
from orchestrator.cli_usage import OneLineUsageErrors
from orchestrator.exit_codes import EXIT_CODE_MEANINGS, ExitCode
from orchestrator.naming import SHORT_NAMES
from orchestrator.secrets import mask, remember_url

app = typer.Typer(
    cls=OneLineUsageErrors,
    name="hpo",
    help=(
        "Hyperparameter search for fine-tuning Hugging Face models.\n\n"
        "Ray Tune schedules the trials, Optuna proposes each configuration, the study lives in a SQL "
        "database (SQLite by default, PostgreSQL for teams) and every trial is logged to MLflow.\n\n"
        "Start with:  hpo run sweeps/demo.yaml\n\n"
        "Exit codes: " + ", ".join(f"{int(code)} {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items()) + "."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
SweepArg = typer.Argument(..., help="Sweep file (YAML). See the README for its keys.", exists=False)
DebugOpt = typer.Option(False, "--debug", help="Show full tracebacks and Ray worker logs.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables.")
RayAddressOpt = typer.Option(
    None, "--ray-address", envvar="RAY_ADDRESS",
    help="Run on this Ray cluster instead of cluster.address: auto, HOST:6379 from a cluster node, or ray://HOST:10001. Env: RAY_ADDRESS.",
)


def _quiet_libraries(debug: bool) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if debug else optuna.logging.WARNING)
    for name in ("mlflow", "alembic", "ray", "ray.tune", "ray.train", "transformers"):
        logging.getLogger(name).setLevel(logging.INFO if debug else logging.CRITICAL)


def _on_ray_address(config, ray_address: Optional[str], context: typer.Context):
    """The sweep with ``--ray-address`` (or ``RAY_ADDRESS``) as its cluster.address, once its form is checked."""
    from orchestrator.ray_session import check_ray_address

    if not ray_address:
        return config
    source = context.get_parameter_source("ray_address")
    check_ray_address(ray_address, "RAY_ADDRESS" if getattr(source, "name", None) == "ENVIRONMENT" else "--ray-address")
    return config.model_copy(update={"cluster": config.cluster.model_copy(update={"address": ray_address})})


@app.command()
def validate(
    context: typer.Context, sweep: Path = SweepArg, ray_address: Optional[str] = RayAddressOpt, debug: bool = DebugOpt, as_json: bool = JsonOpt,
) -> None:
    """Check a sweep file and all it names (model, data, databases, MLflow, results folder, Ray address); run and write nothing.

    With a local Ray (cluster.address null) it also checks that one trial's resources fit this machine; a cluster's nodes are checked by hpo run when it joins, before it writes anything.
    """
    from orchestrator.api import load_sweep, validate_sweep

    with one_line_errors(debug, as_json):
        _quiet_libraries(debug)
        config = _on_ray_address(load_sweep(sweep), ray_address, context)
        prepared = validate_sweep(config)
        summary = {
            "ok": True,
            "study": config.name,
            "search_space": sorted(config.search_space.params),
            "study_db": mask(config.storage.study_db),
            "mlflow": mask(config.storage.mlflow),
        }
        if config.user_function:
            summary["function"] = config.trial.function
            trains = f"function {config.trial.function}"
        else:
            summary.update(task=config.task, model=prepared.model_path, labels=prepared.label_names,
                           train_size=len(prepared.data.train), val_size=len(prepared.data.val),
                           test_size=len(prepared.test) if prepared.test is not None else 0,
                           splits=prepared.splits.origin, notes=list(prepared.splits.notes))
            trains = (f"{summary['train_size']} train / {summary['val_size']} val / {summary['test_size']} test examples "
                      f"({prepared.splits.origin}), labels {', '.join(prepared.label_names)}")
        if as_json:
            print_json(summary)
            return
        out.print(
            f"[green]ok[/green] {sweep}: study [bold]{config.name}[/bold], {trains}, "
            f"searching {', '.join(summary['search_space'])}",
            highlight=False,
        )
        for note in summary.get("notes", []):
            err.print(f"note: {note}", highlight=False, soft_wrap=True)


@app.command()
def run(
    context: typer.Context,
    sweep: Path = SweepArg,
    n_trials: Optional[int] = typer.Option(None, "--n-trials", min=1, help="Run this many more trials (default: budget.n_trials)."),
    total_trials: Optional[int] = typer.Option(None, "--total-trials", min=1, help="Stop once the study has this many finished trials; exits 0 at once if it has them already."),
    timeout: Optional[str] = typer.Option(None, "--timeout", help="Wall-clock budget, e.g. 45m or 6h: no new trials after it; running ones stop at their next epoch (PRUNED, reason budget)."),
    json_summary: Optional[Path] = typer.Option(None, "--json-summary", help="Also write the run's summary (trials by state, best before/after, exit reason) to this JSON file."),
    wait: float = typer.Option(0.0, "--wait", min=0, help="If another hpo run holds this study, wait up to this many seconds (default: exit 3 at once)."),
    enqueue: Optional[Path] = typer.Option(None, "--enqueue", help="YAML list of points ({learning_rate: 3.0e-5, batch_size: 32}, ...) to run first; a point the study already ran is skipped."),
    ray_address: Optional[str] = RayAddressOpt,
    new_study: bool = typer.Option(False, "--new-study", help="Start the next versioned study (NAME-v2, NAME-v3, ...) instead of continuing NAME, e.g. after an incompatible search-space change."),
    debug: bool = DebugOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run (or continue) the sweep's study: N more trials, then print the best ones.

    Running the same file again continues the same study; nothing is lost. Trials left running by a killed run are closed as FAIL (interrupted) and their parameters run again.
    """
    from orchestrator.api import load_sweep, run_sweep
    from orchestrator.budget import parse_duration
    from orchestrator.errors import ConfigError
    from orchestrator.progress import SweepProgress
    from orchestrator.exit_codes import ExitStatus
    from orchestrator.runner import RunOptions
    from orchestrator.targets import check_output_file

    with one_line_errors(debug, as_json):
        _quiet_libraries(debug)
        try:
            timeout_s = parse_duration(timeout) if timeout is not None else None
        except ValueError as error:
            raise ConfigError("--timeout", timeout, str(error).split(" is not a duration; ")[-1]) from None
        if json_summary is not None:
            check_output_file(json_summary, "--json-summary")
        config = _on_ray_address(load_sweep(sweep), ray_address, context)
        points = _read_points(enqueue, config) if enqueue is not None else ()
        progress = SweepProgress(err)
        options = RunOptions(
            n_trials=n_trials, total_trials=total_trials, timeout_s=timeout_s, wait_s=wait, debug=debug,
            callbacks=(progress,), enqueue=points, new_study=new_study,
        )
        try:
            result = run_sweep(config, options)
        finally:
            progress.close()
        if json_summary is not None:
            json_summary.write_text(mask(json.dumps(run_summary(result), indent=2)) + "\n")
        if as_json:
            print_json({"ok": True, **result.to_dict()})
        else:
            for note in result.notes:
                err.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
            print_result(result)
        if result.interrupted:
            raise typer.Exit(ExitCode.INTERRUPTED)
        if result.exit_status == ExitStatus.BUDGET and not result.trials_this_run:
            err.print(f"[yellow]note:[/yellow] the --timeout budget was spent before any trial started (exit {int(ExitCode.BUDGET_SPENT)})", highlight=False)
            raise typer.Exit(ExitCode.BUDGET_SPENT)


def _read_points(path: Path, config) -> tuple[dict, ...]:
    from orchestrator.config import read_yaml_file
    from orchestrator.errors import ConfigError
    from orchestrator.hyperparameter_checks import check_points

    points = read_yaml_file(path, "--enqueue", "a YAML file with a list of points")
    if not isinstance(points, list):
        raise ConfigError("--enqueue", str(path), "the file must hold a YAML list of points, e.g. - {learning_rate: 3.0e-5}")
    check_points(config.search_space, points, "--enqueue")
    return tuple(points)


DbOpt = typer.Option(
    "sqlite:///hpo.db", "--db", envvar="HPO_STUDY_DB", callback=remember_url,
    help="Study database URL (a sweep's storage.study_db). Env: HPO_STUDY_DB.",
)
StudyArg = typer.Argument(..., help="Study name (the sweep file's name).")


def _json_or(rows, as_json: bool) -> bool:
    if as_json:
        print_json(rows)
    return as_json


@app.command()
def studies(db: str = DbOpt, as_json: bool = JsonOpt, debug: bool = DebugOpt) -> None:
    """List the studies in a study database: trials by state, best value, last run."""
    from orchestrator.storage import queries

    with one_line_errors(debug, as_json):
        _quiet_libraries(debug)
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
    db: str = DbOpt,
    state: Optional[list[str]] = typer.Option(None, "--state", help="Only trials in this state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING); repeatable."),
    sort: str = typer.Option("number", "--sort", help="number | value (best first) | duration (longest first)."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """List a study's trials: state, value, parameters, duration, MLflow run id."""
    from orchestrator.storage import queries

    with one_line_errors(debug, as_json):
        _quiet_libraries(debug)
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
    db: str = DbOpt,
    top: int = typer.Option(1, "--top", min=1, help="How many of the best trials."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Print the best trials' parameters as YAML, ready to paste into a training config."""
    import yaml

    from orchestrator.storage import queries

    with one_line_errors(debug, as_json):
        _quiet_libraries(debug)
        rows = queries.best(queries.open_for_reading(db), study, top)
        if _json_or(rows, as_json):
            return
        if not rows:
            err.print(f"[yellow]{study} has no completed trial yet.[/yellow]")
            return
        if len(rows[0]["values"]) > 1:
            print(f"# {study}: the Pareto front, {len(rows)} trial(s), best first by the primary objective")
        from orchestrator.answer import Answer, score_lines

        for row in rows:
            shown = ", ".join(f"{value:.6g}" for value in row["values"])
            if "answer" in row:
                print(f"# {study} trial {row['number']}: the chosen configuration")
                for what, score in score_lines(Answer.from_dict(row["answer"])):
                    print(f"#   {what}: {score}")
            else:
                print(f"# {study} trial {row['number']}: value{'s' * (len(row['values']) > 1)} {shown}" + (f" ({row['measured_on']})" if "measured_on" in row else ""))
            print(yaml.safe_dump(row["params"], sort_keys=False), end="")


@app.command()
def export(
    study: str = StudyArg,
    db: str = DbOpt,
    fmt: str = typer.Option("csv", "--format", help="csv | json | parquet"),
    out_path: Optional[Path] = typer.Option(None, "--out", help="File to write (default: STUDY.FORMAT)."),
    debug: bool = DebugOpt,
) -> None:
    """Write every trial of a study (state, value, parameters, attributes, times) to a CSV, JSON or Parquet file."""
    from orchestrator.storage import queries
    from orchestrator.targets import check_output_file

    with one_line_errors(debug, False):
        _quiet_libraries(debug)
        path = out_path or Path(f"{study}.{fmt}")
        check_output_file(path, "--out")
        count = queries.export(queries.open_for_reading(db), study, fmt, path)
        out.print(f"wrote {count} trials of {study} to {path}", highlight=False)


@app.command()
def report(
    study: str = StudyArg,
    out_path: Path = typer.Option(..., "--out", help="HTML file to write, e.g. report.html (its folder must exist)."),
    db: str = DbOpt,
    mlflow_ui: Optional[str] = typer.Option(None, "--mlflow-ui", callback=remember_url, help="Base URL of the MLflow UI, e.g. http://mlflow.internal:5000: run ids become links to their runs."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Write one self-contained HTML page about a study, to open offline or mail.

    It shows the objective, trials by state, time spent, the best trials (or the Pareto front) with their MLflow runs, and Optuna's plots: history, parameter importances, parallel coordinates, slices and per-epoch values. plotly.js is embedded, so the page needs no network.
    """
    from orchestrator.storage import queries
    from orchestrator.errors import ConfigError
    from orchestrator.study_report import plot_names, render_report
    from orchestrator.targets import check_output_file

    with one_line_errors(debug, as_json):
        _quiet_libraries(debug)
        if mlflow_ui is not None and not mlflow_ui.startswith(("http://", "https://")):
            raise ConfigError("--mlflow-ui", mask(mlflow_ui), "give the MLflow UI's http(s) address, e.g. http://127.0.0.1:5000")
        check_output_file(out_path, "--out")
        loaded = queries.load_study(queries.open_for_reading(db), study)
        page = render_report(loaded, mlflow_ui)
        out_path.write_text(page, encoding="utf-8")
        trials = loaded.get_trials(deepcopy=False)
        summary = {
            "ok": True,
            "report": str(out_path),
            "study": study,
            "trials": len(trials),
            "states": dict(Counter(trial.state.name for trial in trials)),
            "plots": plot_names(loaded),
            "bytes": len(page.encode()),
        }
        if _json_or(summary, as_json):
            return
        out.print(f"wrote the report of {study} ({len(trials)} trials, {len(summary['plots'])} plots) to {out_path}", highlight=False)


@app.command()
def evaluate(
    study: str = StudyArg,
    data: Path = typer.Option(..., "--data", help="Labelled file to score on (CSV, TSV, JSON Lines or Parquet), e.g. a new month's data."),
    db: str = DbOpt,
    mlflow_uri: str = typer.Option("sqlite:///mlruns.db", "--mlflow", envvar="HPO_MLFLOW", callback=remember_url, help="MLflow tracking URI holding the registry (the sweep's storage.mlflow). Env: HPO_MLFLOW."),
    model_uri: Optional[str] = typer.Option(None, "--model-uri", help="Score this MLflow model instead (models:/NAME/VERSION, runs:/RUN_ID/model, a path); default: the study's registered model."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Text column (default: the sweep's data.text_column, else text)."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Label column (default: the sweep's data.label_column, else label)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Texts per forward pass."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="Truncate texts to this many tokens (default: the sweep's data.max_length)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Score the study's registered model (or --model-uri) on a labelled file; writes nothing to the study or MLflow.

    Prints accuracy, macro precision, recall and F1, per-class F1 and rows, titled with what was measured. Text classification only for now.
    """
    from orchestrator.evaluate import evaluate_file, print_evaluation

    with one_line_errors(debug, as_json):
        _quiet_libraries(debug)
        result = evaluate_file(db, study, data, mlflow_uri=mlflow_uri, model_uri=model_uri, text_column=text_column, label_column=label_column,
                               batch_size=batch_size, max_length=max_length, device=device)
        if not _json_or({"ok": True, **result.to_dict()}, as_json):
            print_evaluation(result, out)


JobAddressOpt = typer.Option(
    None, "--address", envvar="RAY_ADDRESS",
    help="The Ray head's job server, http://HEAD:8265 (default: RAY_ADDRESS when it is such an address, else the sweep's cluster.address). Env: RAY_ADDRESS.",
)
JobIdArg = typer.Argument(..., help="The job's id, hpo-STUDY-N (printed by hpo submit; hpo status lists them).")


def _job_address(context: typer.Context, address: Optional[str]) -> tuple[Optional[str], str]:
    from orchestrator.cli_jobs import address_or_none

    source = context.get_parameter_source("address")
    return address_or_none(address, getattr(source, "name", None) == "ENVIRONMENT")


@app.command()
def submit(
    context: typer.Context,
    sweep: Path = SweepArg,
    address: Optional[str] = JobAddressOpt,
    n_trials: Optional[int] = typer.Option(None, "--n-trials", min=1, help="Run this many more trials (default: budget.n_trials)."),
    total_trials: Optional[int] = typer.Option(None, "--total-trials", min=1, help="Stop once the study has this many finished trials."),
    timeout: Optional[str] = typer.Option(None, "--timeout", help="Wall-clock budget of the run, e.g. 45m or 6h."),
    wait: float = typer.Option(0.0, "--wait", min=0, help="On the cluster, wait up to this many seconds for another hpo run of the study to finish."),
    new_study: bool = typer.Option(False, "--new-study", help="Start the next versioned study (NAME-v2, ...) instead of continuing NAME."),
    python: str = typer.Option("python", "--python", help="The head node's Python that has hpo installed (the image's python; in a clone, the path of .venv/bin/python)."),
    emit: Optional[str] = typer.Option(None, "--emit", help="rayjob: print a KubeRay RayJob manifest (with a ConfigMap holding the sweep) for kubectl apply -f, instead of submitting."),
    image: Optional[str] = typer.Option(None, "--image", help="With --emit rayjob: the image of docker/Dockerfile as pushed to your registry (default hpo-orchestrator:0.1.0, docker-compose.yml's tag)."),
    secret: Optional[str] = typer.Option(None, "--secret", help="With --emit rayjob: the Kubernetes Secret holding each ${VAR} the sweep's storage URLs name, under the variable's name (default hpo-db)."),
    debug: bool = DebugOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Check a sweep here, then run it as a Ray job on the cluster (hpo run on the head node) and return at once.

    The job's working directory is the sweep file's folder, so the files it names must lie there; the study database, MLflow and results_dir must be absolute paths on the head node or servers. ${VAR}s are expanded on the head node from its environment: their values are never sent. Prints the job id (hpo-STUDY-N) and how to follow it.

    Exit codes: 0 submitted; 2 invalid input, nothing submitted; 3 a job (or an hpo run) of the study is running.
    """
    from orchestrator.cli_jobs import emit_command, submit_command
    from orchestrator.errors import ConfigError
    from orchestrator.submit import RunArgs

    with one_line_errors(debug, as_json):
        _quiet_libraries(debug)
        args = RunArgs(n_trials=n_trials, total_trials=total_trials, timeout=timeout, wait_s=wait, new_study=new_study, debug=debug)
        if emit is not None:
            if emit != "rayjob":
                raise ConfigError("--emit", emit, "the one manifest hpo writes is rayjob (a KubeRay RayJob): --emit rayjob")
            emit_command(sweep, args, python, image, secret)
            return
        submit_command(sweep, *_job_address(context, address), args, python, as_json, debug)


@app.command()
def status(
    context: typer.Context,
    target: Optional[str] = typer.Argument(None, help="A job id (hpo-STUDY-N) or a study name (its latest job); none lists every hpo job."),
    address: Optional[str] = JobAddressOpt,
    db: Optional[str] = typer.Option(None, "--db", callback=remember_url, help="Study database URL, when the job's own (its sweep's storage.study_db) cannot be read from here."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """A submitted sweep: the job's state and, from the study database, trials by state, the best so far and the running trials.

    A job that ended while no hpo run holds the study says "stopped; resubmit to continue".
    """
    from orchestrator.cli_jobs import status_command

    with one_line_errors(debug, as_json):
        _quiet_libraries(debug)
        status_command(target, *_job_address(context, address), db, as_json, debug)


@app.command()
def logs(
    context: typer.Context,
    job_id: str = JobIdArg,
    address: Optional[str] = JobAddressOpt,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing as the job writes, until it ends."),
    debug: bool = DebugOpt,
) -> None:
    """Print a submitted sweep's progress lines (the output of hpo run on the head node)."""
    from orchestrator.cli_jobs import logs_command

    with one_line_errors(debug, False):
        _quiet_libraries(debug)
        logs_command(job_id, *_job_address(context, address), follow, debug)


@app.command()
def stop(
    context: typer.Context,
    job_id: str = JobIdArg,
    address: Optional[str] = JobAddressOpt,
    wait: float = typer.Option(150.0, "--wait", min=0, help="Wait up to this many seconds for the job to finish stopping (0: return at once)."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Stop a submitted sweep gracefully, as SIGTERM stops hpo run: running trials recorded, their parameters queued again.

    Resubmit the same sweep file to continue the study.
    """
    from orchestrator.cli_jobs import stop_command

    with one_line_errors(debug, as_json):
        _quiet_libraries(debug)
        stop_command(job_id, *_job_address(context, address), wait, as_json, debug)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
