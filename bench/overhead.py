"""Orchestration overhead and data-path speed-up of `hpo` against bare sequential Optuna loops.

Arms (every arm runs the *same* parameter values, enqueued in the same order):
  bare-padded   optuna.optimize loop, tokenise per trial, pad to max_length (the hand-wired baseline)
  bare-ours     optuna.optimize loop calling trials.finetune.fine_tune on data prepared once
  hpo-seq       hpo (Ray Tune + study DB + MLflow), 1 trial at a time on all cores: same compute as bare-ours
  hpo-demo      hpo as the demo sweep runs it: 2 concurrent trials, 1 core each
  noop-optuna / noop-hpo   a trainable that does nothing, run as N and as 4N trials: the cost per
                extra trial (marginal) and the fixed cost of one invocation (start-up)

Usage:  python bench/overhead.py [--trials 8 --train-size 1000 --val-size 300 --epochs 2] [--arms ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from bench.padded_loop import padded_fine_tune  # noqa: E402
from orchestrator.data.prepare import prepare  # noqa: E402
from orchestrator.run.runner import RunOptions, run_sweep  # noqa: E402
from orchestrator.sweep.config import parse_sweep  # noqa: E402
from trials.finetune import Hyperparameters, TrialSettings, fine_tune  # noqa: E402

ALL_ARMS = ("bare-padded", "bare-ours", "hpo-seq", "hpo-demo", "noop-optuna", "noop-hpo")
CORES = os.cpu_count() or 1


def noop_trial(config, settings, data):
    from ray import tune

    tune.report({settings.objective: 0.5, "is_final": 1})


def sweep_config(args, workdir: Path, name: str, concurrent: int, cpu: float, n_trials: int):
    raw = {
        "name": name,
        "model": "bundled:minilm-l6",
        "data": {"source": "bundled:tweets-sentiment", "max_length": args.max_length, "train_size": args.train_size, "val_size": args.val_size},
        "search_space": "text_classification",
        "trial": {"max_epochs": args.epochs},
        "budget": {"n_trials": n_trials, "max_concurrent": concurrent},
        "sampler": {"name": "random", "seed": 0},
        "resources": {"cpu": cpu},
        "storage": {"study_db": f"sqlite:///{workdir / name}.db", "mlflow": f"sqlite:///{workdir / 'mlruns.db'}", "results_dir": str(workdir / "runs")},
    }
    return parse_sweep(raw, Path.cwd())


def parameter_sets(config, n: int) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    distributions = config.search_space.distributions()
    return [study.ask(distributions).params for _ in range(n)]


def settings_for(prepared, threads: int) -> TrialSettings:
    config = prepared.config
    return TrialSettings(
        model_path=prepared.model_path, label_names=prepared.label_names, pad_token_id=prepared.pad_token_id,
        max_epochs=config.trial.max_epochs, objective="val_f1_macro", mode="max", num_threads=threads,
    )


def suggest_all(trial: optuna.Trial, distributions: dict) -> dict:
    values = {}
    for name, d in distributions.items():
        if isinstance(d, optuna.distributions.FloatDistribution):
            values[name] = trial.suggest_float(name, d.low, d.high, log=d.log, step=d.step)
        elif isinstance(d, optuna.distributions.IntDistribution):
            values[name] = trial.suggest_int(name, d.low, d.high, log=d.log, step=d.step)
        else:
            values[name] = trial.suggest_categorical(name, d.choices)
    return values


def run_bare(config, params: list[dict], objective) -> tuple[float, float]:
    """A plain sequential optuna.optimize loop on a SQLite study, the same parameter values enqueued."""
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tempfile.mkdtemp()}/bare.db")
    for values in params:
        study.enqueue_trial(values, skip_if_exists=False)
    distributions, fixed = config.search_space.distributions(), config.search_space.fixed
    started = time.perf_counter()
    study.optimize(lambda trial: objective({**suggest_all(trial, distributions), **fixed}), n_trials=len(params))
    return time.perf_counter() - started, study.best_value


def run_hpo(config, params: list[dict], prepared, trial_function=None) -> tuple[float, float]:
    storage = optuna.storages.RDBStorage(config.storage.study_db)
    study = optuna.create_study(study_name=config.name, storage=storage, direction="maximize", load_if_exists=True)
    for values in params:
        study.enqueue_trial(values, skip_if_exists=False)
    started = time.perf_counter()
    result = run_sweep(config, RunOptions(trial_function=trial_function), prepared=prepared)
    return time.perf_counter() - started, result.best.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--val-size", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--noop-trials", type=int, default=20)
    parser.add_argument("--arms", nargs="+", default=list(ALL_ARMS), choices=ALL_ARMS)
    args = parser.parse_args()

    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    transformers_logging.set_verbosity_error()
    ray.init(num_cpus=CORES, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    workdir = Path(tempfile.mkdtemp(prefix="hpo-bench-"))
    console = Console()
    base = sweep_config(args, workdir, "base", 1, CORES, args.trials)
    prepared = prepare(base)
    params = parameter_sets(base, args.trials)
    texts = _raw_texts(prepared, base)
    rows: dict[str, tuple[float, float | None, int]] = {}

    def record(arm, seconds, best, n):
        rows[arm] = (seconds, best, n)
        console.print(f"{arm:<12} {seconds:8.1f}s  {seconds / n * 1000:9.1f} ms/trial  best={best}")

    def record_noop(arm, run_n):
        small, large = args.noop_trials, 4 * args.noop_trials
        t_small, t_large = run_n(small), run_n(large)
        marginal = (t_large - t_small) / (large - small)
        noop[arm] = (marginal, t_small - small * marginal)
        console.print(f"{arm:<12} {small} trials {t_small:.1f}s, {large} trials {t_large:.1f}s")

    noop: dict[str, tuple[float, float]] = {}
    for arm in args.arms:
        if arm == "bare-padded":
            settings = settings_for(prepared, CORES)
            record(arm, *run_bare(base, params, lambda p, settings=settings: padded_fine_tune(settings, Hyperparameters.from_mapping(p), texts, args.max_length)), args.trials)
        elif arm == "bare-ours":
            settings = settings_for(prepared, CORES)
            record(arm, *run_bare(base, params, lambda p, settings=settings: _best_of(fine_tune(settings, Hyperparameters.from_mapping(p), prepared.data, _collect()))), args.trials)
        elif arm == "hpo-seq":
            record(arm, *run_hpo(sweep_config(args, workdir, "hpo-seq", 1, CORES, args.trials), params, prepared), args.trials)
        elif arm == "hpo-demo":
            record(arm, *run_hpo(sweep_config(args, workdir, "hpo-demo", 2, 1, args.trials), params, prepared), args.trials)
        elif arm == "noop-optuna":
            record_noop(arm, lambda n: run_bare(base, params[:1] * n, lambda p: 0.5)[0])
        elif arm == "noop-hpo":
            run_hpo(sweep_config(args, workdir, "noop-warmup", 1, 1, 2), params[:1] * 2, prepared, noop_trial)  # creates the MLflow store
            record_noop(arm, lambda n: run_hpo(sweep_config(args, workdir, f"noop{n}", 1, 1, n), params[:1] * n, prepared, noop_trial)[0])
    ray.shutdown()
    console.print(_table(rows, args))
    if noop:
        console.print(_noop_table(noop))


_LAST: list[dict] = []


def _collect():
    _LAST.clear()
    return _LAST.append


def _best_of(_final: dict) -> float:
    return max(report["val_f1_macro"] for report in _LAST)


def _raw_texts(prepared, config):
    train, val = prepared.splits.train, prepared.splits.validation
    return (train.texts, train.labels.tolist()), (val.texts, val.labels.tolist())


def _table(rows, args) -> Table:
    table = Table(title=f"{args.trials} trials · {args.train_size} train / {args.val_size} val · {args.epochs} epoch(s) · max_length {args.max_length} · {CORES} cores")
    for column in ("arm", "wall s", "s / trial", "best val_f1_macro", "vs"):
        table.add_column(column, justify="right" if column != "arm" else "left")
    references = {"bare-ours": "bare-padded", "hpo-seq": "bare-ours", "hpo-demo": "bare-padded"}
    for arm, (seconds, best, n) in rows.items():
        reference = references.get(arm)
        ratio = f"{seconds / rows[reference][0]:.3f}× {reference}" if reference in rows else ""
        table.add_row(arm, f"{seconds:.1f}", f"{seconds / n:.3f}", f"{best:.4f}", ratio)
    return table


def _noop_table(noop: dict[str, tuple[float, float]]) -> Table:
    table = Table(title="No-op trainable: cost per extra trial and fixed cost per invocation")
    for column in ("arm", "ms / extra trial", "fixed s / invocation"):
        table.add_column(column, justify="right" if column != "arm" else "left")
    for arm, (marginal, fixed) in noop.items():
        table.add_row(arm, f"{marginal * 1000:.0f}", f"{fixed:.2f}")
    return table


if __name__ == "__main__":
    main()
