"""LoRA against full fine-tuning at the same search budget, on the bundled MiniLM-L6 and tweets.

Arms (each: the same number of trials, the product's TPE sampler with the same seed and
start-up, the product's trial code on data the product prepared once, one trial at a time):
  full   search_spaces/text_classification.yaml (the demo's space: method full)
  lora   search_spaces/lora.yaml
  both   method searched, the LoRA settings conditional on it; one learning-rate range spans both methods' decades

Each arm runs in a fresh process, so its peak memory (the largest of its trials') is its own: the
peak resident set on CPU (the Python, torch and model baseline included), the peak allocated on a
CUDA GPU. s / epoch is the mean over the arm's trials of an epoch's training and evaluation.

Usage:  python bench/lora_vs_full.py [--trials 3 --train-size 200 --val-size 100 --epochs 1 --max-length 32] [--arms full lora both]
        python bench/lora_vs_full.py --smoke      # 1 trial per arm on 32 rows: a quick check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

CORES = os.cpu_count() or 1
ARMS = ("full", "lora", "both")
BOTH = {
    "method": {"type": "categorical", "choices": ["full", "lora"]},
    "learning_rate": {"type": "float", "low": 5.0e-5, "high": 5.0e-3, "log": True},
    "batch_size": {"type": "categorical", "choices": [16, 32]},
    "weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
    "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
    "lora_rank": {"type": "categorical", "choices": [4, 8, 16, 32], "when": {"method": ["lora"]}},
    "lora_dropout": {"type": "float", "low": 0.0, "high": 0.1, "when": {"method": ["lora"]}},
    "lora_alpha_ratio": 2.0,
    "lora_targets": "all_linear",
}
SPACES = {"full": "text_classification", "lora": "lora", "both": BOTH}


def sweep_config(args, arm: str):
    from orchestrator.sweep.config import parse_sweep

    raw = {
        "name": f"lora-vs-full-{arm}",
        "model": "bundled:minilm-l6",
        "data": {"source": "bundled:tweets-sentiment", "max_length": args.max_length, "train_size": args.train_size, "val_size": args.val_size},
        "search_space": SPACES[arm],
        "trial": {"max_epochs": args.epochs, "checkpoint": False},
        "budget": {"n_trials": args.trials, "max_concurrent": 1},
        "sampler": {"name": "tpe", "seed": args.seed},
        "resources": {"cpu": CORES},
    }
    return parse_sweep(raw, Path.cwd())


def peak_memory_bytes(on_gpu: bool) -> int:
    import resource

    import torch

    if on_gpu and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_arm(args, arm: str, prepared) -> dict:
    """Every trial of one arm, in this (fresh) process."""
    import optuna
    import peft  # noqa: F401 (its import costs about 140 MB resident: every arm pays it, so the peaks compare training)

    from orchestrator.data.trial_settings import trial_settings
    from orchestrator.search.registries import SAMPLERS, SamplerInputs
    from orchestrator.storage.study import startup_trials
    from trials.finetune import Hyperparameters, fine_tune

    config = sweep_config(args, arm)
    space = config.search_space
    settings = replace(trial_settings(replace(prepared, config=config), keep_best_model=False), checkpoint=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=SAMPLERS["tpe"](SamplerInputs(args.seed, startup_trials(config), space)))
    trials = []
    started = time.perf_counter()
    for _ in range(args.trials):
        trial = study.ask()
        params = space.sample(trial)
        reports: list[dict] = []
        fine_tune(settings, Hyperparameters.from_mapping(params), prepared.data, lambda metrics, reports=reports, **_: reports.append(metrics))
        best = max(report["val_f1_macro"] for report in reports)
        study.tell(trial, best)
        trials.append({"params": params, "best": best, "trainable": reports[-1]["trainable_params"],
                       "epoch_s": [report["epoch_seconds"] for report in reports]})
        print(f"{arm}: {params} -> {best:.4f}", file=sys.stderr)
    top = max(trials, key=lambda t: t["best"])
    return {
        "arm": arm, "trials": trials, "wall_s": time.perf_counter() - started, "best": top["best"], "best_params": top["params"],
        "best_trainable": top["trainable"], "epoch_s": statistics.mean(s for t in trials for s in t["epoch_s"]),
        "peak_mb": peak_memory_bytes(settings.use_gpu) / 2**20,
        "methods": sorted({t["params"].get("method", "full") for t in trials}),
    }


def describe(params: dict) -> str:
    method = params.get("method", "full")
    if method == "lora":
        return f"lora r={params.get('lora_rank', 8)} lr={params['learning_rate']:.2g}"
    depth = params.get("unfreeze_depth")
    return f"full{'' if depth is None else f' top {depth}'} lr={params['learning_rate']:.2g}"


def table(rows: list[dict], args, baseline: float) -> Table:
    out = Table(title=f"{args.trials} trials per arm · {args.train_size} train / {args.val_size} val · {args.epochs} epoch(s) · "
                      f"max_length {args.max_length} · {CORES} cores · majority-class val_f1_macro {baseline:.4f}")
    for column in ("arm", "best val_f1_macro", "best trial", "trainable params", "s / epoch", "peak memory MB", "wall s"):
        out.add_column(column, justify="left" if column in ("arm", "best trial") else "right")
    for row in rows:
        out.add_row(row["arm"], f"{row['best']:.4f}", describe(row["best_params"]), f"{row['best_trainable']:,}",
                    f"{row['epoch_s']:.1f}", f"{row['peak_mb']:.0f}", f"{row['wall_s']:.0f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=200)
    parser.add_argument("--val-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--smoke", action="store_true", help="1 trial per arm, 32 train / 16 val rows of max_length 16, 1 epoch")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON on stdout instead of the table")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.train_size, args.val_size, args.epochs, args.max_length = 1, 32, 16, 1, 16

    from orchestrator.data.prepare import prepare

    prepared = prepare(sweep_config(args, "full"))
    rows = []
    for arm in args.arms:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            rows.append(pool.submit(run_arm, args, arm, prepared).result())
    if args.json:
        print(json.dumps({"settings": vars(args), "baseline": prepared.baseline["val_f1_macro"], "rows": rows}))
    else:
        Console(width=200).print(table(rows, args, prepared.baseline["val_f1_macro"]))


if __name__ == "__main__":
    main()
