"""How long the inspection commands take, from the shell prompt to the last line: ``hpo`` side by
side with Optuna's own command line on the same SQLite study database.

Creates a study of a few dozen trials (complete, pruned and failed, as a sweep leaves them) in a
temporary folder, then runs each command a few times in a fresh interpreter, alternating the two
command lines, and prints the median wall-clock and CPU seconds (on a busy machine the CPU
seconds are the steadier measure). Both are started the same way (their console scripts' two
lines), so the difference is what each imports and does.

Usage:  python bench/cli_latency.py [--runs 5] [--trials 40]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from orchestrator.storage.trial_attrs import MLFLOW_RUN_ID, STATE_REASON  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STUDY = "bench-cli"
LAUNCH = "import sys; from {module} import main; sys.argv[0] = {name!r}; sys.exit(main())"  # what a console script does

DISTRIBUTIONS = {
    "learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
    "batch_size": CategoricalDistribution([16, 32, 64]),
    "unfreeze_depth": IntDistribution(0, 6),
    "weight_decay": FloatDistribution(0.0, 0.1),
}


def fill_study(url: str, count: int) -> None:
    """``count`` trials of two epochs each: four in five complete, then alternately pruned and failed."""
    rng = np.random.default_rng(0)
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(study_name=STUDY, storage=url, direction="maximize")
    trials = []
    for number in range(count):
        params = {name: sampler.sample_independent(study, None, name, d) for name, d in DISTRIBUTIONS.items()}
        first, second = (float(v) for v in rng.uniform(0.3, 0.8, size=2))
        if number % 5:
            trials.append(create_trial(params=params, distributions=DISTRIBUTIONS, value=second, intermediate_values={1: first, 2: second},
                                       user_attrs={MLFLOW_RUN_ID: f"{number:032x}", STATE_REASON: "completed"}))
        elif number % 10:
            trials.append(create_trial(state=TrialState.PRUNED, params=params, distributions=DISTRIBUTIONS, intermediate_values={1: first},
                                       user_attrs={STATE_REASON: "stopped early after 1 epoch(s)"}))
        else:
            trials.append(create_trial(state=TrialState.FAIL, params=params, distributions=DISTRIBUTIONS,
                                       user_attrs={STATE_REASON: "NonFiniteLossError: training loss became nan"}))
    study.add_trials(trials)


def commands(url: str) -> list[tuple[str, list[str] | None]]:
    """(hpo arguments, the optuna arguments that answer the same question, if any)."""
    return [
        ("--help", ["--help"]),
        ("validate --help", None),
        ("studies", ["studies", "--storage", url]),
        (f"trials {STUDY}", ["trials", "--study-name", STUDY, "--storage", url]),
        (f"best {STUDY}", ["best-trial", "--study-name", STUDY, "--storage", url]),
    ]


def timed_run(program: str, module: str, args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one run in a fresh interpreter; a failing command stops the benchmark."""
    cpu_before, started = _children_cpu_s(), time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCH.format(module=module, name=program), *args], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    wall_s, cpu_s = time.perf_counter() - started, _children_cpu_s() - cpu_before
    if done.returncode != 0:
        raise SystemExit(f"{program} {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return wall_s, cpu_s


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs of each command; the table shows their median")
    parser.add_argument("--trials", type=int, default=40, help="trials in the study")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)  # not the repository: python -c imports from the working directory first
        url = f"sqlite:///{cwd / 'hpo.db'}"
        fill_study(url, args.trials)
        table = Table(title=f"Median of {args.runs} runs in a fresh interpreter each (wall-clock and CPU seconds); "
                            f"one SQLite study of {args.trials} trials", title_justify="left")
        for column in ("hpo command", "wall s", "CPU s", "optuna command", "wall s", "CPU s", "hpo ÷ optuna (wall)"):
            table.add_column(column, justify="left" if column.endswith("command") else "right")
        for hpo_command, optuna_args in commands(url):
            hpo_args = hpo_command.split() + ([] if hpo_command.endswith("--help") else ["--db", url])
            runs: dict[str, list[tuple[float, float]]] = {"hpo": [], "optuna": []}
            for _ in range(args.runs + 1):  # the first round warms the file cache and is not counted
                runs["hpo"].append(timed_run("hpo", "orchestrator.cli", hpo_args, cwd))
                if optuna_args is not None:
                    runs["optuna"].append(timed_run("optuna", "optuna.cli", optuna_args, cwd))
            hpo_wall, hpo_cpu = (statistics.median(column) for column in zip(*runs["hpo"][1:], strict=True))
            if optuna_args is None:
                table.add_row(f"hpo {hpo_command}", f"{hpo_wall:.2f}", f"{hpo_cpu:.2f}", "", "", "", "")
                continue
            optuna_wall, optuna_cpu = (statistics.median(column) for column in zip(*runs["optuna"][1:], strict=True))
            shown = " ".join("URL" if arg == url else arg for arg in optuna_args)
            table.add_row(f"hpo {hpo_command}", f"{hpo_wall:.2f}", f"{hpo_cpu:.2f}", f"optuna {shown}",
                          f"{optuna_wall:.2f}", f"{optuna_cpu:.2f}", f"{hpo_wall / optuna_wall:.2f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
