"""Compute spent to find a good configuration, in real sweeps: an arm of ``bench/search_replay.py``
(by default the replay's winner) against random + FIFO (Ray Tune's defaults).

Every arm gets the same compute budget, counted in trial-epochs (one epoch of one trial, which
does not depend on how busy the machine is): random + FIFO runs ``--trials`` full trials;
TPE + ASHA, whose pruned trials cost less, continues its study (``hpo run`` again, as a user
would) until it has spent as much. Same bundled task (a subset of the tweets, pre-trained
MiniLM-L6), several sampler seeds. Per run the table shows the trial-epochs spent, the best
validation macro-F1, the trial-epochs needed to first reach 98 % of the best F1 any run saw,
and the best F1 within the budget.

The replay measures the same thing on recorded curves with 50+ seeds; this checks on 3 seeds of
real training that the real runs point the same way.

Usage:  python bench/search_efficiency.py [--arms random+fifo "tpe+asha@4" --trials 12 --epochs 4 --seeds 0 1 2 --train-size 240 --val-size 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.search_replay import ARMS, BASELINE  # noqa: E402
from orchestrator.data.prepare import prepare  # noqa: E402
from orchestrator.run.runner import RunOptions, run_sweep  # noqa: E402
from orchestrator.sweep.config import parse_sweep  # noqa: E402

DEFAULT_ARMS = [BASELINE, "tpe+asha@4"]
QUICK_VAL_SIZE = 100  # evaluations within an epoch score this many validation rows, as the replay's table did


def sweep_config(args, workdir: Path, arm: str, seed: int):
    spec = ARMS[arm]
    name = f"{arm.replace('+', '-').replace('@', '-e').replace(' ', '-')}-s{seed}"
    raw = {
        "name": name,
        "model": "bundled:minilm-l6",
        "data": {"source": "bundled:tweets-sentiment", "max_length": args.max_length, "train_size": args.train_size, "val_size": args.val_size},
        "search_space": "text_classification",
        "trial": {"max_epochs": args.epochs, "seed": 0, "checkpoint": False,  # one data split: only the search varies
                  "evals_per_epoch": spec.evals_per_epoch, "quick_val_size": QUICK_VAL_SIZE},
        "budget": {"n_trials": args.trials, "max_concurrent": args.concurrent},
        "sampler": {"name": spec.sampler, "seed": seed},
        "scheduler": {"name": spec.scheduler, "grace_period": spec.grace_period, "reduction_factor": spec.reduction_factor},
        "storage": {"study_db": f"sqlite:///{workdir / name}.db", "mlflow": f"sqlite:///{workdir / 'mlruns.db'}", "results_dir": str(workdir / "runs")},
    }
    return parse_sweep(raw, Path.cwd())


def run_arm(args, workdir: Path, arm: str, seed: int, budget: int):
    """Run the arm's study until it has spent ``budget`` trial-epochs (or at most 4x the trials)."""
    config = sweep_config(args, workdir, arm, seed)
    prepared = prepare(config)
    evals = ARMS[arm].evals_per_epoch
    trials: list = []
    while _spent(trials, evals) < budget and len(trials) < 8 * args.trials:
        per_trial = _spent(trials, evals) / len(trials) if trials else args.epochs
        more = max(args.concurrent, round((budget - _spent(trials, evals)) / per_trial))
        run_sweep(config, RunOptions(n_trials=more), prepared=prepared)
        study = optuna.load_study(study_name=config.name, storage=config.storage.study_db)
        trials = [t for t in study.trials if t.intermediate_values and t.datetime_complete]
    return trials, evals


def _trained(trial, evals_per_epoch: int) -> float:
    """Epochs a trial trained: its evaluations (Optuna's steps) over evaluations per epoch."""
    return max(trial.intermediate_values) / evals_per_epoch


def _spent(trials, evals_per_epoch: int) -> float:
    return sum(_trained(t, evals_per_epoch) for t in trials)


def curve(trials, evals_per_epoch: int) -> list[tuple[float, float]]:
    """(cumulative trial-epochs, best completed trial value so far) after each trial, in the order
    trials ended: as in the replay, a configuration is found when its trial completes."""
    spent, best, points = 0.0, 0.0, []
    for trial in sorted(trials, key=lambda t: t.datetime_complete):
        spent += _trained(trial, evals_per_epoch)
        if trial.value is not None:
            best = max(best, trial.value)
        points.append((spent, best))
    return points


def epochs_to_reach(points, target: float) -> float | None:
    return next((spent for spent, best in points if best >= target), None)


def best_within(points, budget: float) -> float:
    return max((best for spent, best in points if spent <= budget), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs=2, default=DEFAULT_ARMS, choices=list(ARMS), metavar="ARM",
                        help=f"the baseline, then the arm to check (names of bench/search_replay.py; default {' '.join(DEFAULT_ARMS)})")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-size", type=int, default=240)
    parser.add_argument("--val-size", type=int, default=500)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--concurrent", type=int, default=2)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")  # once for every invocation
    budget = args.trials * args.epochs
    curves: dict[tuple[str, int], list] = {}
    with tempfile.TemporaryDirectory(prefix="hpo-search-bench-") as folder:
        for seed in args.seeds:
            for arm in args.arms:
                trials, evals = run_arm(args, Path(folder), arm, seed, budget)
                curves[arm, seed] = curve(trials, evals)
                Console().print(f"{arm} seed {seed}: {len(trials)} trials, {curves[arm, seed][-1][0]:.2f} trial-epochs, best F1 {curves[arm, seed][-1][1]:.4f}")
    ray.shutdown()

    best_seen = max(best_within(points, budget) for points in curves.values())
    target = 0.98 * best_seen
    table = Table(title=f"budget {budget} trial-epochs per run (random+FIFO: {args.trials} trials x {args.epochs} epochs) · {args.train_size} / {args.val_size} tweets · MiniLM-L6 · "
                        f"target = 98% of best F1 seen ({best_seen:.4f}) = {target:.4f}")
    for column in ("arm", "seed", "trials", "trial-epochs", "epochs to target", f"best F1 within {budget} epochs"):
        table.add_column(column, justify="right")
    summary: dict[str, dict[str, list]] = {arm: {"to_target": [], "equal": [], "reached": []} for arm in args.arms}
    for (arm, seed), points in curves.items():
        within = [(spent, best) for spent, best in points if spent <= budget]
        reached = epochs_to_reach(within, target)
        summary[arm]["reached"].append(reached is not None)
        # a run that never reached the target is charged the whole budget (a lower bound on what it would need)
        summary[arm]["to_target"].append(reached if reached is not None else budget)
        summary[arm]["equal"].append(best_within(points, budget))
        table.add_row(arm, str(seed), str(len(within)), f"{within[-1][0]:.2f}" if within else "0",
                      f"{reached:.2f}" if reached is not None else f">{budget}", f"{best_within(points, budget):.4f}")
    for arm, values in summary.items():
        table.add_row(f"[bold]{arm} mean[/bold]", "", "", "", f"{statistics.mean(values['to_target']):.1f} ({sum(values['reached'])}/{len(values['reached'])} reached)",
                      f"{statistics.mean(values['equal']):.4f}")
    Console(width=160).print(table)
    baseline, arm = args.arms
    ratio = statistics.mean(summary[arm]["to_target"]) / statistics.mean(summary[baseline]["to_target"])
    Console().print(f"{arm} needs {ratio:.2f}x the trial-epochs of {baseline} to reach the target (goal: <= 0.5x); "
                    f"best F1 at equal compute: {statistics.mean(summary[arm]['equal']):.4f} vs {statistics.mean(summary[baseline]['equal']):.4f}")


if __name__ == "__main__":
    main()
