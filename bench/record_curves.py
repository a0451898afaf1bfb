"""Record the learning-curve table that ``bench/search_replay.py`` replays searches on.

Configurations are drawn (scrambled Sobol points, so the table covers the space evenly) from
the ``text_classification`` search-space preset; each is fine-tuned with the product's own
trial code (``trials.finetune.fine_tune``, the data the product prepares) on one fixed split
of the bundled tweets with the bundled MiniLM-L6, for every training seed, evaluating
``--evals-per-epoch`` times per epoch. Every evaluation becomes one row of the CSV.

The recording resumes: (configuration, seed) pairs already in the file are skipped, so it can be
stopped and started again, and ``--configs`` raised later to add configurations.

On a GPU (``--gpu``: each worker's trials on the GPU) the workload can grow to where an epoch is
hundreds of optimizer steps: ``--train-size 4000`` is 250 steps at batch 16 (bench/gpu_check.py
records that table, ``bench/curves/tweets_minilm_4000.csv``, with the time it has left).

Usage:  python bench/record_curves.py [--configs 64 --seeds 0 1 --workers 2 --out bench/curves/tweets_minilm.csv]
        python bench/record_curves.py --gpu --workers 4 --train-size 4000 --out bench/curves/tweets_minilm_4000.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "curves" / "tweets_minilm.csv"
PRESET = "text_classification"

# One fixed workload: small enough to record 128 curves on a 2-core machine in about an hour.
WORKLOAD = {"train_size": 256, "val_size": 200, "max_length": 48, "max_epochs": 4, "quick_val_size": 100}


def sweep_config(args):
    from orchestrator.sweep.config import parse_sweep

    workload = {**WORKLOAD, **{key: getattr(args, key) for key in WORKLOAD if getattr(args, key, None) is not None}}
    raw = {
        "name": "curves",
        "model": "bundled:minilm-l6",
        "data": {"source": "bundled:tweets-sentiment", "max_length": workload["max_length"],
                 "train_size": workload["train_size"], "val_size": workload["val_size"], "split_seed": 0},
        "search_space": PRESET,
        "trial": {"max_epochs": workload["max_epochs"], "evals_per_epoch": args.evals_per_epoch,
                  "quick_val_size": min(workload["quick_val_size"], workload["val_size"]), "checkpoint": False},
        "resources": {"cpu": args.threads, "gpu": 1 if args.gpu else 0},
        "storage": {"study_db": "sqlite://", "mlflow": "sqlite://", "results_dir": str(HERE / "curves" / ".scratch")},
    }
    return parse_sweep(raw, Path.cwd())


def configurations(space, count: int) -> list[dict]:
    """``count`` points of the preset's space from a scrambled Sobol sequence (seed 0)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.QMCSampler(seed=0, scramble=True))
    points = []
    for _ in range(count):
        trial = study.ask(space.distributions())
        points.append({**space.fixed, **trial.params})
        study.tell(trial, 0.0)
    return points


_PREPARED = None


def _record_one(args, config_id: int, params: dict, seed: int) -> list[dict]:
    """Fine-tune one configuration with one training seed; one row per evaluation."""
    global _PREPARED
    from orchestrator.data.prepare import prepare
    from orchestrator.data.trial_settings import trial_settings
    from trials.finetune import Hyperparameters, fine_tune

    if _PREPARED is None:  # once per worker process: tokenising is the same for every curve
        _PREPARED = prepare(sweep_config(args))
    settings = replace(trial_settings(_PREPARED, keep_best_model=False), seed=seed, num_threads=args.threads)
    rows: list[dict] = []
    started = time.perf_counter()

    def report(metrics, checkpoint_dir=None):
        rows.append({
            "config_id": config_id, "seed": seed, **params,
            "step": metrics["step"], "epoch": metrics["epoch"], "interim": metrics.get("interim", 0),
            "warming_up": metrics["warming_up"], "val_f1_macro": round(metrics["val_f1_macro"], 5),
            "val_loss": round(metrics["val_loss"], 5), "seconds": round(time.perf_counter() - started, 2),
        })

    fine_tune(settings, Hyperparameters.from_mapping(params), _PREPARED.data, report)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--evals-per-epoch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--gpu", action="store_true", help="train on the GPU (every worker shares it)")
    for key, value in WORKLOAD.items():
        if key != "quick_val_size":
            parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"default {value}")
    args = parser.parse_args()

    config = sweep_config(args)
    points = configurations(config.search_space, args.configs)
    done = set()
    if args.out.exists():
        with args.out.open() as handle:
            done = {(int(row["config_id"]), int(row["seed"])) for row in csv.DictReader(handle)}
    todo = [(i, point, seed) for i, point in enumerate(points) for seed in args.seeds if (i, seed) not in done]
    print(f"{len(todo)} curves to record ({len(done)} already in {args.out})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(_record_one, args, i, point, seed) for i, point, seed in todo]
        for count, future in enumerate(as_completed(futures), start=1):
            rows = future.result()
            new_file = not args.out.exists()
            with args.out.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                if new_file:
                    writer.writeheader()
                writer.writerows(rows)
            elapsed = time.perf_counter() - started
            print(f"{count}/{len(todo)} curves, {elapsed / 60:.1f} min; config {rows[0]['config_id']} seed {rows[0]['seed']}: "
                  f"final F1 {rows[-1]['val_f1_macro']:.3f} in {rows[-1]['seconds']:.0f} s", flush=True)
    print(f"recorded {len(todo)} curves in {(time.perf_counter() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
