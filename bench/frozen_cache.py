"""The frozen-layer cache (`trial.cache_frozen: auto`) against running every layer (`off`), in one run.

On the bundled MiniLM-L6 (6 layers) and bundled tweets (max_length 64):
  depth-K   one trial of our trial code (trials/finetune.py, 1 thread, no Ray) with unfreeze_depth
            fixed at K (0, 2, 4, 6; and LoRA adapters on the top --lora-depths layers) and the other
            parameters fixed (full: lr 3e-4; LoRA: lr 2e-3, rank 8, all_linear; batch 16, dropout
            0.1, warmup 0.1), once per --seeds seed, with and without the cache: seconds per epoch
            (training and evaluation), setup seconds (the first cached trial at a depth builds its
            boundary there, as in a sweep) and best val_f1_macro.
  sweeps    real `hpo` sweeps per --sweep-seeds seed, auto vs off: the same --trials configurations
            in both (drawn at random from the space with the seed and enqueued, so the comparison is
            paired), 2 at a time, 1 core each, patience 1: wall time (the boundaries' builds
            included), trial-epochs per second, the trials' mean seconds per epoch, best
            val_f1_macro, the boundaries built. Arms (--sweeps): demo (the demo's search space,
            --trials trials of --sweep-epochs epochs), short (4 trials of 1 epoch: the sweep a
            cache built up front made slower), lora (the LoRA preset, 4 trials of 1 epoch).

Usage:  python bench/frozen_cache.py [--seeds 0 1 2 --sweep-seeds 0 --sweeps demo short lora --trials 6 --train-size 200 --val-size 100]
        python bench/frozen_cache.py --smoke      # 1 seed, depths 0 and 6, a 2-trial sweep of 1 epoch, 32 / 16 tweets
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from orchestrator.data.frozen_layers import with_frozen_cache  # noqa: E402
from orchestrator.data.prepare import prepare  # noqa: E402
from orchestrator.data.trial_settings import trial_settings  # noqa: E402
from orchestrator.run.runner import RunOptions, run_sweep  # noqa: E402
from orchestrator.sweep.config import parse_sweep  # noqa: E402
from trials.finetune import Hyperparameters, fine_tune  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEPTHS = (0, 2, 4, 6)
MODES = ("off", "auto")
FIXED = dict(learning_rate=3e-4, batch_size=16, dropout=0.1, warmup_ratio=0.1, weight_decay=0.01)
LORA = dict(FIXED, learning_rate=2e-3, method="lora", lora_rank=8, lora_targets="all_linear")
SWEEPS = {  # arm: (search space, trials (None: --trials), epochs (None: --sweep-epochs))
    "demo": ("text_classification", None, None),
    "short": ("text_classification", 4, 1),
    "lora": ("lora", 4, 1),
}


def sweep_config(args, workdir: Path, name: str, mode: str, seed: int, epochs: int, space: str = "text_classification", trials: int | None = None):
    raw = {
        "name": name,
        "model": "bundled:minilm-l6",
        "data": {"source": "bundled:tweets-sentiment", "max_length": 64, "train_size": args.train_size, "val_size": args.val_size},
        "search_space": space,
        "trial": {"max_epochs": epochs, "early_stopping_patience": 1, "seed": seed, "cache_frozen": mode, "checkpoint": False},
        "budget": {"n_trials": trials or args.trials, "max_concurrent": 2},
        "sampler": {"name": "random", "seed": seed},
        "resources": {"cpu": 1},
        "storage": {"study_db": f"sqlite:///{workdir / name}.db", "mlflow": f"sqlite:///{workdir / 'mlruns.db'}", "results_dir": str(workdir / "runs")},
    }
    return parse_sweep(raw, ROOT)


def fixed_depth_arms(args, workdir: Path, console: Console) -> tuple[dict, str]:
    """{(arm, mode): [(seconds per epoch, setup seconds, best F1) per seed]} and the cache's summary."""
    prepared, note = with_frozen_cache(prepare(sweep_config(args, workdir, "fixed", "auto", 0, args.epochs)))
    if note:
        console.print(note)
    settings = trial_settings(prepared, keep_best_model=False)
    data = {"auto": prepared.data, "off": replace(prepared.data, frozen=None)}
    arms = [(str(depth), Hyperparameters(unfreeze_depth=depth, **FIXED)) for depth in args.depths]
    arms += [(f"lora {depth}", Hyperparameters(unfreeze_depth=depth, **LORA)) for depth in args.lora_depths]
    rows: dict = defaultdict(list)
    for seed in args.seeds:
        for arm, hyperparameters in arms:
            for mode in MODES:
                reports: list[dict] = []
                fine_tune(replace(settings, seed=seed, patience=None), hyperparameters, data[mode],
                          lambda metrics, reports=reports, **_: reports.append(metrics))
                per_epoch = sum(r["epoch_seconds"] for r in reports) / len(reports)
                best = max(r["val_f1_macro"] for r in reports)
                rows[arm, mode].append((per_epoch, reports[0]["setup_seconds"], best))
                console.print(f"{arm:>6} {mode:<4} seed {seed}: {per_epoch:6.2f} s/epoch, setup {reports[0]['setup_seconds']:5.2f} s, "
                              f"best {best:.4f} ({reports[-1]['frozen_cache']})")
    cache = prepared.data.frozen
    return rows, f"{cache.summary().split(';')[0]}; built by the trials: {','.join(map(str, cache.built()))} ({cache.nbytes / 1e6:.0f} MB)"


def sweep_arm(args, workdir: Path, console: Console, arm: str) -> dict:
    """{mode: [measures of one sweep per seed]}."""
    from mlflow import MlflowClient

    space, trials, epochs = SWEEPS[arm]
    trials, epochs = trials or args.trials, epochs or args.sweep_epochs
    rows: dict = defaultdict(list)
    for seed in args.sweep_seeds:
        points = None
        for mode in MODES:
            (workdir / f"{arm}-{mode}-s{seed}").mkdir()
            config = sweep_config(args, workdir / f"{arm}-{mode}-s{seed}", f"{arm}-{mode}-s{seed}", mode, seed, epochs, space, trials)
            if points is None:
                draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
                points = [draw.ask(config.search_space.distributions()).params for _ in range(trials)]
            study = optuna.create_study(study_name=config.name, storage=config.storage.study_db, direction="maximize")
            for point in points:
                study.enqueue_trial(point)
            started = time.perf_counter()
            result = run_sweep(config, RunOptions())
            wall = time.perf_counter() - started
            study = optuna.load_study(study_name=config.name, storage=config.storage.study_db)
            epochs_run = sum(len(trial.intermediate_values) for trial in study.trials)
            client = MlflowClient(config.storage.mlflow)
            runs = client.search_runs([client.get_experiment_by_name(config.name).experiment_id], max_results=1000)
            per_epoch = [m.value for run in runs if "mlflow.parentRunId" in run.data.tags
                         for m in client.get_metric_history(run.info.run_id, "epoch_seconds")]
            built = sorted(int(path.name.split("-")[1]) for path in (workdir / f"{arm}-{mode}-s{seed}" / "runs" / "frozen-cache").glob("*/boundary-*")
                           if path.is_dir() and "." not in path.name)
            rows[mode].append({"wall": wall, "epochs": epochs_run, "best": result.best.value, "epoch_s": _mean(per_epoch), "built": built})
            console.print(f"{arm} {mode:<4} seed {seed}: {wall:6.1f} s, {epochs_run} trial-epochs, {_mean(per_epoch):.2f} s/epoch, "
                          f"best {result.best.value:.4f}, depths {sorted(p['unfreeze_depth'] for p in points)}; boundaries built {built or '-'}")
    return rows


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _f1(values) -> str:
    values = list(values)
    return f"{_mean(values):.4f}" + (f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else "")


def depth_table(rows: dict, cache: str, args) -> Table:
    out = Table(title=f"unfreeze_depth fixed · 1 trial · {args.train_size} train / {args.val_size} val · {args.epochs} epoch(s) · "
                      f"{len(args.seeds)} seed(s) · cache {cache}")
    for column in ("unfreeze_depth", "s / epoch off", "s / epoch auto", "speed-up", "setup s off", "setup s auto", "best F1 off", "best F1 auto",
                   "F1 auto − off"):
        out.add_column(column, justify="right")
    for arm in [str(depth) for depth in args.depths] + [f"lora {depth}" for depth in args.lora_depths]:
        off, auto = rows[arm, "off"], rows[arm, "auto"]
        epoch_off, epoch_auto = _mean(r[0] for r in off), _mean(r[0] for r in auto)
        out.add_row(arm, f"{epoch_off:.2f}", f"{epoch_auto:.2f}", f"{epoch_off / epoch_auto:.1f}×", f"{_mean(r[1] for r in off):.2f}",
                    f"{_mean(r[1] for r in auto):.2f}", _f1(r[2] for r in off), _f1(r[2] for r in auto),
                    f"{_mean(r[2] for r in auto) - _mean(r[2] for r in off):+.4f}")
    return out


def sweep_table(arm: str, rows: dict, args) -> Table:
    space, trials, epochs = SWEEPS[arm]
    out = Table(title=f"{arm}: search space {space} through hpo · {trials or args.trials} trials, 2 at a time · {args.train_size} train / "
                      f"{args.val_size} val · {epochs or args.sweep_epochs} epoch(s) · {len(args.sweep_seeds)} seed(s)")
    for column in ("cache", "wall s", "trial-epochs", "trial-epochs / s", "s / epoch", "best F1", "boundaries built", "vs off"):
        out.add_column(column, justify="right" if column != "cache" else "left")
    for mode in MODES:
        runs = rows[mode]
        wall = _mean(r["wall"] for r in runs)
        versus = ""
        if mode == "auto":
            versus = (f"wall {wall / _mean(r['wall'] for r in rows['off']):.2f}×, "
                      f"epoch {_mean(r['epoch_s'] for r in rows['off']) / _mean(r['epoch_s'] for r in runs):.1f}× faster, "
                      f"F1 {_mean(r['best'] for r in runs) - _mean(r['best'] for r in rows['off']):+.4f}")
        built = " / ".join(",".join(map(str, r["built"])) or "-" for r in runs)
        out.add_row(mode, f"{wall:.1f}", f"{_mean(r['epochs'] for r in runs):.1f}", f"{sum(r['epochs'] for r in runs) / sum(r['wall'] for r in runs):.3f}",
                    f"{_mean(r['epoch_s'] for r in runs):.2f}", _f1(r["best"] for r in runs), built, versus)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="fixed-depth arms: one trial per seed (none: skip them)")
    parser.add_argument("--sweep-seeds", type=int, nargs="*", default=[0], help="sweep arms: one sweep pair per seed (none: skip them)")
    parser.add_argument("--sweeps", nargs="*", default=list(SWEEPS), choices=list(SWEEPS))
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    parser.add_argument("--lora-depths", type=int, nargs="*", default=[2], help="fixed-depth LoRA arms: adapters on the top K layers")
    parser.add_argument("--trials", type=int, default=6, help="demo arm")
    parser.add_argument("--train-size", type=int, default=200)
    parser.add_argument("--val-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1, help="fixed-depth arms")
    parser.add_argument("--sweep-epochs", type=int, default=2, help="demo arm")
    parser.add_argument("--smoke", action="store_true", help="1 seed, depths 0 and 6, a 2-trial sweep of 1 epoch, 32 / 16 tweets")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.sweep_seeds, args.depths, args.lora_depths, args.trials, args.train_size, args.val_size, args.sweep_epochs = \
            [0], [0], [0, 6], [], 2, 32, 16, 1
        args.sweeps = ["demo"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    workdir = Path(tempfile.mkdtemp(prefix="hpo-bench-cache-"))
    console = Console(width=200)
    started = time.perf_counter()
    rows, cache = fixed_depth_arms(args, workdir, console) if args.seeds else ({}, "")
    sweeps = {}
    if args.sweep_seeds and args.sweeps:
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        sweeps = {arm: sweep_arm(args, workdir, console, arm) for arm in args.sweeps}
        ray.shutdown()
    console.print(f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {time.perf_counter() - started:.0f} s in all")
    if rows:
        console.print(depth_table(rows, cache, args))
    for arm, measures in sweeps.items():
        console.print(sweep_table(arm, measures, args))


if __name__ == "__main__":
    main()
