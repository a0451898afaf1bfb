"""The frozen-layer cache (`trial.cache_frozen: auto`) against running every layer (`off`), in one run.

Arms, each a real `hpo` sweep on the bundled MiniLM-L6 and bundled tweets, run with `auto` and with `off`:
  demo        the demo's search space (unfreeze_depth 0-6, TPE), --trials trials, 2 at a time, 1 core each
  depth-K     the same space with unfreeze_depth fixed at K (0, 2, 4, 6), --depth-trials trials

Every arm runs once per seed (sampler.seed = trial.seed = the seed). The table gives each arm's
wall time (the cache's build included), trial-epochs per second, the trials' mean seconds per epoch,
the best val_f1_macro (mean over seeds) and the cache's size and build time.

Usage:  python bench/frozen_cache.py [--seeds 3 --trials 8 --depth-trials 2 --train-size 300 --val-size 150 --epochs 2]
        python bench/frozen_cache.py --smoke      # a 2-minute run: 1 seed, demo and depth-0 arms, 64 / 32 tweets
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from orchestrator.config import parse_sweep  # noqa: E402
from orchestrator.runner import RunOptions, run_sweep  # noqa: E402
from orchestrator.search_space import read_yaml_mapping  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEPTHS = (0, 2, 4, 6)
MODES = ("off", "auto")


def sweep_config(args, workdir: Path, arm: str, mode: str, seed: int):
    space = read_yaml_mapping(ROOT / "search_spaces" / "text_classification.yaml")
    trials = args.trials
    if arm != "demo":
        space["unfreeze_depth"] = int(arm.removeprefix("depth-"))
        trials = args.depth_trials
    name = f"{arm}-{mode}-s{seed}"
    raw = {
        "name": name,
        "model": "bundled:minilm-l6",
        "data": {"source": "bundled:tweets-sentiment", "max_length": 64, "train_size": args.train_size, "val_size": args.val_size},
        "search_space": space,
        "trial": {"max_epochs": args.epochs, "early_stopping_patience": 1, "seed": seed, "cache_frozen": mode, "checkpoint": False},
        "budget": {"n_trials": trials, "max_concurrent": 2},
        "sampler": {"name": "tpe", "seed": seed},
        "resources": {"cpu": 1},
        "storage": {"study_db": f"sqlite:///{workdir / name}.db", "mlflow": f"sqlite:///{workdir / 'mlruns.db'}", "results_dir": str(workdir / "runs")},
    }
    return parse_sweep(raw, ROOT)


def run_arm(config) -> dict:
    """Wall time, trial-epochs, mean seconds per epoch, best value and the cache's summary of one sweep."""
    from mlflow import MlflowClient

    started = time.perf_counter()
    result = run_sweep(config, RunOptions())
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name=config.name, storage=config.storage.study_db)
    epochs = sum(len(trial.intermediate_values) for trial in study.trials)
    client = MlflowClient(config.storage.mlflow)
    experiment = client.get_experiment_by_name(config.name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parent = next(run for run in runs if "mlflow.parentRunId" not in run.data.tags)
    per_epoch = [m.value for run in runs if "mlflow.parentRunId" in run.data.tags
                 for m in client.get_metric_history(run.info.run_id, "epoch_seconds")]
    return {"wall": wall, "epochs": epochs, "epoch_s": sum(per_epoch) / max(len(per_epoch), 1), "best": result.best.value,
            "cache": parent.data.params.get("trial.cache_frozen", "")}


def table(rows: dict, args) -> Table:
    title = (f"frozen-layer cache · MiniLM-L6 · {args.train_size} train / {args.val_size} val tweets · {args.epochs} epochs · "
             f"{len(args.seeds)} seed(s) · {os.cpu_count()} cores")
    out = Table(title=title)
    for column in ("arm", "cache", "wall s", "trial-epochs/s", "s / epoch", "best val_f1_macro", "auto vs off", "cache size, build"):
        out.add_column(column, justify="left" if column in ("arm", "cache", "cache size, build") else "right")
    for arm in rows:
        off = rows[arm].get("off")
        for mode, runs in rows[arm].items():
            wall = sum(r["wall"] for r in runs) / len(runs)
            rate = sum(r["epochs"] for r in runs) / sum(r["wall"] for r in runs)
            epoch_s = sum(r["epoch_s"] for r in runs) / len(runs)
            best = [r["best"] for r in runs]
            mean = sum(best) / len(best)
            spread = f" ({min(best):.3f}-{max(best):.3f})" if len(best) > 1 else ""
            versus = ""
            if mode == "auto" and off:
                off_wall = sum(r["wall"] for r in off) / len(off)
                off_epoch = sum(r["epoch_s"] for r in off) / len(off)
                off_best = sum(r["best"] for r in off) / len(off)
                versus = f"wall {wall / off_wall:.2f}×, epoch {off_epoch / epoch_s:.1f}× faster, F1 {mean - off_best:+.4f}"
            cache = runs[0]["cache"]
            size = cache.split(", ", 1)[1] if mode == "auto" and cache.startswith("boundaries") else cache if mode == "auto" else ""
            out.add_row(arm, mode, f"{wall:.1f}", f"{rate:.3f}", f"{epoch_s:.2f}", f"{mean:.4f}{spread}", versus, size)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--depth-trials", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=300)
    parser.add_argument("--val-size", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=["demo", *(f"depth-{d}" for d in DEPTHS)])
    parser.add_argument("--smoke", action="store_true", help="1 seed, the demo and depth-0 arms, 64 / 32 tweets, 1 epoch")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.trials, args.train_size, args.val_size, args.epochs, args.arms = [0], 2, 64, 32, 1, ["demo", "depth-0"]

    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    transformers_logging.set_verbosity_error()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    workdir = Path(tempfile.mkdtemp(prefix="hpo-bench-cache-"))
    console = Console(width=200)
    rows: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for seed in args.seeds:
        for arm in args.arms:
            for mode in MODES:
                measured = run_arm(sweep_config(args, workdir, arm, mode, seed))
                rows[arm][mode].append(measured)
                console.print(f"{arm:<8} {mode:<4} seed {seed}: {measured['wall']:6.1f} s, {measured['epochs']} trial-epochs, "
                              f"{measured['epoch_s']:.2f} s/epoch, best {measured['best']:.4f}, cache {measured['cache']}")
    ray.shutdown()
    console.print(table(rows, args))


if __name__ == "__main__":
    main()
