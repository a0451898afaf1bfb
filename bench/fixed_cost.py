"""The fixed cost of one invocation: ``hpo run`` on a one-trial sweep of a no-op training function
(``bench/noop_trial.py``), side by side in one run with the same no-op trial wired by hand with
Ray Tune and OptunaSearch (``bench/handwritten_tune.py``), split into phases; then ``hpo validate``
of the demo and of a sweep whose study database URL is bad (it fails before touching data).

Each program runs as a subprocess with ``HPO_PHASE_TIMES=FILE``: it appends a mark (phase name,
wall-clock time) as each phase ends (:mod:`orchestrator.progress.phase_marks`; the no-op trial marks its own
start and end). A phase's time is its mark minus the mark before; the first counts from the launch,
"exit" is the last mark to the process's end. The two programs alternate, ``--runs`` rounds after
one uncounted warm-up round; the table shows each phase's median. On a busy machine compare the
columns, not the absolute figures: the load average is printed with the table.

Usage:  python bench/fixed_cost.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
HPO = Path(sys.executable).with_name("hpo")
PHASES = ("imports", "validation", "ray start", "study open", "tune start", "trial", "tune stop", "result", "shutdown", "exit")


def noop_sweep(workdir: Path) -> Path:
    raw = {
        "name": "fixed-cost",
        "objective": {"metric": "score", "mode": "max"},
        "trial": {"function": f"{ROOT / 'bench' / 'noop_trial.py'}:main", "max_epochs": 1},
        "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "budget": {"n_trials": 1, "max_concurrent": 1},
        "sampler": {"name": "tpe", "seed": 0},
        "resources": {"cpu": 1},
        "storage": {"study_db": f"sqlite:///{workdir}/hpo.db", "mlflow": f"sqlite:///{workdir}/mlruns.db", "results_dir": str(workdir / "runs")},
    }
    path = workdir / "noop.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def bad_database_sweep(workdir: Path) -> Path:
    raw = yaml.safe_load((ROOT / "sweeps" / "demo.yaml").read_text())
    raw["search_space"] = str(ROOT / "search_spaces" / "text_classification.yaml")
    raw["storage"] = {"study_db": "sqlite:////no/such/folder/hpo.db", "mlflow": f"sqlite:///{workdir}/mlruns.db", "results_dir": str(workdir / "runs")}
    path = workdir / "bad-db.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


RAY_START_TIMEOUT = "The current node timed out during startup"  # Ray's raylet missed its 30 s window (an overloaded machine)


def timed(argv: list[str], workdir: Path, expect: int = 0) -> dict[str, float] | None:
    """Run ``argv`` once; return each phase's seconds (and "total"), or None when Ray's start timed out."""
    marks_file = workdir / "marks.txt"
    marks_file.unlink(missing_ok=True)
    env = {**os.environ, "HPO_PHASE_TIMES": str(marks_file), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    launched = time.time()
    done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    ended = time.time()
    if done.returncode != expect and RAY_START_TIMEOUT in done.stderr:
        return None
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}, not {expect}: {done.stderr.strip()[-1500:]}")
    marks = [line.rsplit(" ", 1) for line in marks_file.read_text().splitlines()] if marks_file.exists() else []
    phases, before = {}, launched
    for phase, at in marks:
        phases[phase] = phases.get(phase, 0.0) + float(at) - before
        before = float(at)
    phases["exit"] = ended - before
    phases["total"] = ended - launched
    return phases


def median_phases(runs: list[dict[str, float]]) -> dict[str, float]:
    names = {name for run in runs for name in run}
    return {name: statistics.median(run.get(name, 0.0) for run in runs) for name in names}


def run_table(hpo: dict[str, float], baseline: dict[str, float], runs: int) -> Table:
    table = Table(title=f"One no-op trial, median of {runs} runs (seconds); load average {_load()}", title_justify="left")
    for column in ("phase", "hpo run", "hand-written Tune + OptunaSearch"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for phase in PHASES:
        table.add_row(phase, _cell(hpo, phase), _cell(baseline, phase))
    fixed = {name: row["total"] - row.get("trial", 0.0) for name, row in (("hpo", hpo), ("baseline", baseline))}
    table.add_row("[bold]fixed cost[/bold] (total - trial)", f"[bold]{fixed['hpo']:.2f}[/bold]", f"[bold]{fixed['baseline']:.2f}[/bold]")
    table.add_row("total", f"{hpo['total']:.2f}", f"{baseline['total']:.2f}")
    return table


def validate_table(rows: dict[str, dict[str, float]], runs: int) -> Table:
    table = Table(title=f"hpo validate, median of {runs} runs (seconds); load average {_load()}", title_justify="left")
    for column in ("sweep", "exit", "imports", "to the answer", "total"):
        table.add_column(column, justify="left" if column == "sweep" else "right")
    for name, row in rows.items():
        table.add_row(name, str(int(row["code"])), f"{row.get('imports', 0.0):.2f}", f"{row['total'] - row.get('imports', 0.0):.2f}", f"{row['total']:.2f}")
    return table


def _cell(row: dict[str, float], phase: str) -> str:
    return f"{row[phase]:.2f}" if phase in row else "-"


def _load() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="counted rounds (after one warm-up round)")
    args = parser.parse_args()
    console = Console(width=140)
    with tempfile.TemporaryDirectory(prefix="hpo-fixed-cost-") as folder:
        workdir = Path(folder)
        sweep, bad = noop_sweep(workdir), bad_database_sweep(workdir)
        programs = {
            "hpo": [str(HPO), "run", str(sweep)],
            "baseline": [sys.executable, str(ROOT / "bench" / "handwritten_tune.py"), str(workdir)],
            "validate demo": [str(HPO), "validate", str(ROOT / "sweeps" / "demo.yaml")],
            "validate bad database URL": [str(HPO), "validate", str(bad)],
        }
        expected = {"validate bad database URL": 2}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in programs}
        ray_timeouts = dict.fromkeys(programs, 0)
        for round_number in range(args.runs + 1):
            for name, argv in programs.items():
                while (phases := timed(argv, workdir, expected.get(name, 0))) is None:  # counted, and run again
                    ray_timeouts[name] += 1
                phases["code"] = expected.get(name, 0)
                if round_number:  # the first round warms the file cache
                    runs[name].append(phases)
            console.print(f"round {round_number} done", style="dim")
        medians = {name: median_phases(rows) for name, rows in runs.items()}
    console.print(run_table(medians["hpo"], medians["baseline"], args.runs))
    console.print(f"Ray start timed out (run again, not counted): hpo run {ray_timeouts['hpo']}, hand-written {ray_timeouts['baseline']}")
    console.print(validate_table({name: medians[name] for name in programs if name.startswith("validate")}, args.runs))


if __name__ == "__main__":
    main()
