"""GPU utilisation of a sweep when trials get a whole GPU, half of one, or a quarter.

Each arm runs the *same* parameter sets (drawn once from the search space, enqueued in the same
order) through `hpo` (Ray Tune, study DB, MLflow) with ``resources.gpu`` = 1, 0.5 and 0.25, that
is 1, 2 and 4 trials sharing the GPU. ``gpu=1`` is the baseline. For each arm it reports:

  busy %        share of NVML samples (every 0.2 s, during the sweep) in which a kernel ran
  samples/s     training samples of all trials / wall time of the sweep
  fixed s/trial a trial's MLflow run time minus the time in its epochs (Ray placement, worker
                start or reuse, model load and transfer, checkpoint hand-off, bookkeeping)
  GPU mem GiB   the most device memory in use at once

Usage:
  python bench/gpu_utilisation.py --model PATH --data tweets.csv        # on a GPU machine
  python bench/gpu_utilisation.py --cpu                                 # smoke run on CPU (CI): no GPU numbers
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.overhead import parameter_sets  # noqa: E402
from orchestrator.data.prepare import prepare  # noqa: E402
from orchestrator.run.runner import RunOptions, run_sweep  # noqa: E402
from orchestrator.sweep.config import parse_sweep  # noqa: E402

CORES = os.cpu_count() or 1


class GpuSampler:
    """Samples NVML utilisation and memory in a thread; idle where there is no NVIDIA GPU."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[int, int]] = []  # (utilisation %, memory used bytes)
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no driver, no pynvml: nothing to sample
            self._nvml = self._handle = None

    @property
    def available(self) -> bool:
        return self._handle is not None

    def __enter__(self) -> GpuSampler:
        self.samples.clear()
        self._stop.clear()
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
            self.samples.append((rates.gpu, memory.used))

    def busy_fraction(self) -> float | None:
        return sum(u for u, _ in self.samples) / 100 / len(self.samples) if self.samples else None

    def peak_memory_gib(self) -> float | None:
        return max(m for _, m in self.samples) / 2**30 if self.samples else None


def sweep_config(args, workdir: Path, fraction: float):
    concurrent = round(1 / fraction)
    resources = {"cpu": max(1, CORES // concurrent), "gpu": fraction} if not args.cpu else {"cpu": 1}
    raw = {
        "name": f"gpu-{fraction:g}",
        "model": args.model,
        "data": {"source": args.data, "max_length": args.max_length, "train_size": args.train_size, "val_size": args.val_size},
        "search_space": args.search_space,
        "trial": {"max_epochs": args.epochs, "checkpoint": True},
        "budget": {"n_trials": args.trials, "max_concurrent": concurrent},
        "sampler": {"name": "random", "seed": 0},
        "resources": resources,
        "storage": {"study_db": f"sqlite:///{workdir}/gpu-{fraction:g}.db", "mlflow": f"sqlite:///{workdir}/mlruns.db",
                    "results_dir": str(workdir / "runs")},
    }
    if args.text_column:
        raw["data"].update(text_column=args.text_column, label_column=args.label_column)
    return parse_sweep(raw, Path.cwd())


def run_arm(config, params: list[dict], prepared, sampler: GpuSampler) -> dict:
    study = optuna.create_study(study_name=config.name, storage=config.storage.study_db, direction="maximize", load_if_exists=True)
    for values in params:
        study.enqueue_trial(values, skip_if_exists=False)
    with sampler:
        started = time.perf_counter()
        result = run_sweep(config, RunOptions(), prepared=prepared)
        wall = time.perf_counter() - started
    epochs_run, fixed = _trial_times(config)
    return {
        "wall": wall,
        "states": result.trials_this_run,
        "busy": sampler.busy_fraction(),
        "samples_per_s": epochs_run * len(prepared.data.train) / wall,
        "fixed": sum(fixed) / len(fixed),
        "fixed_max": max(fixed),
        "memory": sampler.peak_memory_gib(),
        "best": result.best.value if result.best else None,
    }


def _trial_times(config) -> tuple[int, list[float]]:
    """Epochs run in all, and each trial's time outside its epochs, from the MLflow child runs."""
    from mlflow import MlflowClient

    client = MlflowClient(config.storage.mlflow)
    experiment = client.get_experiment_by_name(config.name)
    runs = [run for run in client.search_runs([experiment.experiment_id], max_results=1000) if "mlflow.parentRunId" in run.data.tags]
    epochs, fixed = 0, []
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "epoch_seconds")
        epochs += len(history)
        fixed.append((run.info.end_time - run.info.start_time) / 1000 - sum(m.value for m in history))
    return epochs, fixed


def table(rows: dict[float, dict], args) -> Table:
    device = "CPU smoke run" if args.cpu else "1 GPU"
    title = f"{args.trials} trials per arm · {args.train_size} train / {args.val_size} val · {args.epochs} epoch(s) · max_length {args.max_length} · {device}"
    result = Table(title=title)
    for column in ("gpu per trial", "at once", "wall s", "busy %", "samples/s", "vs gpu=1", "fixed s/trial (max)", "GPU mem GiB", "states"):
        result.add_column(column, justify="left" if column in ("gpu per trial", "states") else "right")
    baseline = rows.get(1.0)
    for fraction, row in rows.items():
        speedup = f"{row['samples_per_s'] / baseline['samples_per_s']:.2f}×" if baseline else ""
        result.add_row(
            f"{fraction:g}", str(round(1 / fraction)), f"{row['wall']:.1f}",
            "n/a" if row["busy"] is None else f"{100 * row['busy']:.0f}",
            f"{row['samples_per_s']:.0f}", speedup, f"{row['fixed']:.2f} ({row['fixed_max']:.2f})",
            "n/a" if row["memory"] is None else f"{row['memory']:.1f}",
            ", ".join(f"{n} {state}" for state, n in sorted(row["states"].items())),
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--model", default="bundled:minilm-l6")
    parser.add_argument("--data", default="bundled:tweets-sentiment")
    parser.add_argument("--text-column", default=None)
    parser.add_argument("--label-column", default=None)
    parser.add_argument("--search-space", default="text_classification_gpu")
    parser.add_argument("--cpu", action="store_true", help="smoke run without a GPU: tiny sizes, trials on CPU cores, no GPU columns")
    args = parser.parse_args()
    if args.cpu:
        args.trials, args.train_size, args.val_size, args.epochs, args.max_length = 2, 32, 16, 1, 16
        args.fractions = [f for f in args.fractions if round(1 / f) <= CORES]
        args.search_space = "text_classification_cpu"

    import ray
    from transformers.utils import logging as transformers_logging

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    transformers_logging.set_verbosity_error()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")  # counted once, not per arm
    console = Console(width=160)
    workdir = Path(tempfile.mkdtemp(prefix="hpo-gpu-bench-"))
    base = sweep_config(args, workdir, 1.0)
    prepared = prepare(base)
    params = parameter_sets(base, args.trials)
    sampler = GpuSampler()
    rows: dict[float, dict] = {}
    for fraction in args.fractions:
        config = sweep_config(args, workdir, fraction)
        rows[fraction] = run_arm(config, params, replace(prepared, config=config), sampler)
        console.print(f"gpu={fraction:g}: {rows[fraction]['wall']:.1f} s, {rows[fraction]['states']}")
    ray.shutdown()
    console.print(table(rows, args))


if __name__ == "__main__":
    main()
