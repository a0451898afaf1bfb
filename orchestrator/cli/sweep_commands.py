"""``hpo validate`` and ``hpo run``: check a sweep file, then run (or continue) its study."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from orchestrator.cli.app import (
    DebugOpt,
    JsonOpt,
    RayAddressOpt,
    SweepArg,
    app,
    quiet_libraries,
)
from orchestrator.cli.console import err, one_line_errors, out, print_json
from orchestrator.cli.output import print_result, run_summary
from orchestrator.exit_codes import ExitCode
from orchestrator.secrets import mask
from trials.task_specs import TASK_SPECS


def _on_ray_address(config, ray_address: str | None, context: typer.Context):
    """The sweep with ``--ray-address`` (or ``RAY_ADDRESS``) as its cluster.address, once its form is checked."""
    from orchestrator.run.ray_session import check_ray_address

    if not ray_address:
        return config
    source = context.get_parameter_source("ray_address")
    check_ray_address(ray_address, "RAY_ADDRESS" if getattr(source, "name", None) == "ENVIRONMENT" else "--ray-address")
    return config.model_copy(update={"cluster": config.cluster.model_copy(update={"address": ray_address})})


@app.command()
def validate(
    context: typer.Context, sweep: Path = SweepArg, *, ray_address: str | None = RayAddressOpt, debug: bool = DebugOpt, as_json: bool = JsonOpt,
) -> None:
    """Check a sweep file and all it names (model, data, databases, MLflow, results folder, Ray address); run and write nothing.

    With a local Ray (cluster.address null) it also checks that one trial's resources fit this machine; a cluster's nodes are checked by hpo run when it joins, before it writes anything.
    """
    from orchestrator.api import load_sweep, validate_sweep
    from orchestrator.progress.phase_marks import mark

    mark("imports")
    with one_line_errors(debug, as_json):
        quiet_libraries(debug)
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
            data, splits = prepared.task_data, prepared.task_splits
            labelled = TASK_SPECS[config.task].labelled
            summary.update(task=config.task, model=prepared.model_path, labels=prepared.label_names if labelled else None,
                           train_size=len(data.train), val_size=len(data.val),
                           test_size=len(prepared.test) if prepared.test is not None else 0,
                           splits=splits.origin, notes=list(splits.notes))
            trains = (f"{summary['train_size']} train / {summary['val_size']} val / {summary['test_size']} test examples "
                      f"({splits.origin})" + (f", labels {', '.join(prepared.label_names)}" if labelled else ""))
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
    *,
    n_trials: int | None = typer.Option(None, "--n-trials", min=1, help="Run this many more trials (default: budget.n_trials)."),
    total_trials: int | None = typer.Option(None, "--total-trials", min=1, help="Stop once the study has this many finished trials; exits 0 at once if it has them already."),
    timeout: str | None = typer.Option(None, "--timeout", help="Wall-clock budget, e.g. 45m or 6h: no new trials after it; running ones stop at their next epoch (PRUNED, reason budget)."),
    json_summary: Path | None = typer.Option(None, "--json-summary", help="Also write the run's summary (trials by state, best before/after, exit reason) to this JSON file."),
    wait: float = typer.Option(0.0, "--wait", min=0, help="If another hpo run holds this study, wait up to this many seconds (default: exit 3 at once)."),
    enqueue: Path | None = typer.Option(None, "--enqueue", help="YAML list of points ({learning_rate: 3.0e-5, batch_size: 32}, ...) to run first; a point the study already ran is skipped."),
    ray_address: str | None = RayAddressOpt,
    new_study: bool = typer.Option(False, "--new-study", help="Start the next versioned study (NAME-v2, NAME-v3, ...) instead of continuing NAME, e.g. after an incompatible search-space change."),
    debug: bool = DebugOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run (or continue) the sweep's study: N more trials, then print the best ones.

    Running the same file again continues the same study; nothing is lost. Trials left running by a killed run are closed as FAIL (interrupted) and their parameters run again.
    """
    from orchestrator.api import load_sweep, run_sweep
    from orchestrator.cli.progress import SweepProgress
    from orchestrator.errors import ConfigError
    from orchestrator.exit_codes import ExitStatus
    from orchestrator.progress.phase_marks import mark
    from orchestrator.run.budget import parse_duration
    from orchestrator.run.runner import RunOptions
    from orchestrator.run.targets import check_output_file

    mark("imports")
    with one_line_errors(debug, as_json):
        quiet_libraries(debug)
        try:
            timeout_s = parse_duration(timeout) if timeout is not None else None
        except ValueError as error:
            raise ConfigError("--timeout", timeout, str(error).split(" is not a duration; ")[-1]) from None
        if json_summary is not None:
            check_output_file(json_summary, "--json-summary")
        config = _on_ray_address(load_sweep(sweep), ray_address, context)
        points = _read_points(enqueue, config) if enqueue is not None else ()
        with SweepProgress(err) as progress:  # phases and trials as they happen, on stderr
            options = RunOptions(
                n_trials=n_trials, total_trials=total_trials, timeout_s=timeout_s, wait_s=wait, debug=debug,
                callbacks=(progress,), enqueue=points, new_study=new_study,
            )
            result = run_sweep(config, options)
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
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.config import read_yaml_file
    from orchestrator.sweep.hyperparameter_checks import check_points

    points = read_yaml_file(path, "--enqueue", "a YAML file with a list of points")
    if not isinstance(points, list):
        raise ConfigError("--enqueue", str(path), "the file must hold a YAML list of points, e.g. - {learning_rate: 3.0e-5}")
    check_points(config.search_space, points, "--enqueue")
    return tuple(points)
