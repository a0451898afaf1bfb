"""Selection bias of the search score, and what confirming the top configurations buys.

The best trial of a search is the best of many noisy validation scores, so its score overstates
what the chosen configuration does on rows no decision saw. For each split seed (a different
draw of train / validation / test rows) this benchmark runs one search and answers it twice,
with the product's own code:

  arm A  single-seed pick: the sweep without confirmation; its answer is the search's best
         trial, scored once on the test split (its search trial's model);
  arm B  confirmed pick: the same study continued with ``confirm: {top_k, seeds}``; only the
         confirmation runs it owes run (no search trial), the answer is the best confirmed mean,
         scored once on the test split (its best confirmation run's model).

Arm B continues arm A's study (as a user adding ``confirm`` to a finished sweep would) instead of
running a second search with the same sampler seed: both arms then answer from the very same
search trials by construction (checked: no search trial is added or changed), a second search
would not be bit-identical with concurrent trials anyway (TPE reads whichever trials finished
first), and the search is not paid twice.

Per split seed and on average the table shows the search's best validation score, arm B's
confirmed mean ± std (validation, new training seeds), each pick's test score, the gaps
search − test (arm A) and confirmed − test (arm B), and the test score of B's pick minus A's.

Targets (issue 18): B's test score >= A's on average; B's confirmed mean within ±0.02 of its
test score on average (an honest estimate), where A's search score overstates its test score.

Usage:
  python bench/selection_bias.py                          # bundled tweets + MiniLM-L6 (about 20 min on 2 quiet cores)
  python bench/selection_bias.py --csv data.csv --text-column text --label-column label
  python bench/selection_bias.py --smoke                  # tiny random BERT on synthetic rows (CI: about a minute)
  python bench/selection_bias.py --json                   # one JSON object on stdout instead of the table
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from orchestrator.answer.confirm import confirmation_study_name, confirmed  # noqa: E402
from orchestrator.data.prepare import prepare  # noqa: E402
from orchestrator.run.runner import RunOptions, run_sweep  # noqa: E402
from orchestrator.sweep.config import parse_sweep  # noqa: E402

CORES = os.cpu_count() or 1
HONEST_WITHIN = 0.02  # |confirmed mean − test| on average, the target
LOG = Console(stderr=True)  # progress; stdout carries the table (or the JSON)


def sweep_config(args, workdir: Path, split_seed: int, confirm: bool):
    name = f"bias-s{split_seed}"
    data = {"source": args.data, "max_length": args.max_length, "split_seed": split_seed,
            "train_size": args.train_size, "val_size": args.val_size, "test_size": args.test_size}
    if args.text_column:
        data["text_column"] = args.text_column
    if args.label_column:
        data["label_column"] = args.label_column
    raw = {
        "name": name,
        "model": args.model,
        "data": data,
        "search_space": args.search_space,
        "trial": {"max_epochs": args.epochs, "seed": 0, "checkpoint": False},
        "budget": {"n_trials": args.trials, "max_concurrent": args.concurrent},
        "resources": {"cpu": max(1, CORES // args.concurrent)},
        "sampler": {"name": args.sampler, "seed": split_seed, **({"n_startup_trials": args.startup} if args.startup is not None else {})},
        "confirm": {"top_k": args.top_k if confirm else 0, "seeds": args.confirm_seeds},
        "storage": {"study_db": f"sqlite:///{workdir / name}.db", "mlflow": f"sqlite:///{workdir / 'mlruns.db'}", "results_dir": str(workdir / "runs")},
    }
    return parse_sweep(raw, Path.cwd())


def search_trials(config) -> list[tuple[int, str, float | None, dict]]:
    study = optuna.load_study(study_name=config.name, storage=config.storage.study_db)
    return [(t.number, t.state.name, t.values[0] if t.values else None, t.params) for t in study.get_trials(deepcopy=False)]


def run_split(args, workdir: Path, split_seed: int) -> dict:
    """One search on one draw of the splits, answered without (A) and with (B) confirmation."""
    config_a = sweep_config(args, workdir, split_seed, confirm=False)
    prepared = prepare(config_a)
    if prepared.test is None:
        raise SystemExit(f"split seed {split_seed}: no test split ({'; '.join(prepared.splits.notes)}); lower --train-size/--val-size or --test-size")
    started = time.perf_counter()
    result_a = run_sweep(config_a, RunOptions(), prepared=prepared)
    wall_a = time.perf_counter() - started
    searched = search_trials(config_a)
    finished = sum(state in ("COMPLETE", "PRUNED") for _, state, _, _ in searched)

    config_b = sweep_config(args, workdir, split_seed, confirm=True)
    started = time.perf_counter()
    result_b = run_sweep(config_b, RunOptions(total_trials=finished), prepared=replace(prepared, config=config_b))
    wall_b = time.perf_counter() - started
    if search_trials(config_b) != searched or result_b.trials_this_run:
        raise SystemExit(f"split seed {split_seed}: the confirmation invocation changed the search ({result_b.trials_this_run}); the arms would not share it")

    metric = result_a.metric
    test_metric = "test_" + metric.removeprefix("val_")
    a, b = result_a.answer, result_b.answer
    if not a or not b or not a.get("test") or not b.get("test") or not b.get("confirmed"):
        raise SystemExit(f"split seed {split_seed}: an answer lacks a score: A={a}, B={b}, notes={result_a.notes + result_b.notes}")
    storage = config_b.storage.study_db
    all_confirmed = confirmed(optuna.load_study(study_name=config_b.name, storage=storage),
                              optuna.load_study(study_name=confirmation_study_name(config_b.name), storage=storage))
    row = {
        "split_seed": split_seed,
        "splits": result_a.splits,
        "metric": metric,
        "search_trials": a["search_trials"],
        "search_values": sorted((v for _, s, v, _ in searched if s == "COMPLETE" and v is not None), reverse=True),
        "A": {"trial": a["trial"], "params": a["params"], "search": a["search_value"], "test": a["test"]["metrics"][test_metric]},
        "B": {"trial": b["trial"], "params": b["params"], "search": b["search_value"], "confirmed_mean": b["confirmed"]["mean"],
              "confirmed_std": b["confirmed"]["std"], "confirmed_values": b["confirmed"]["values"], "test": b["test"]["metrics"][test_metric]},
        "confirmed": [{"trial": c.trial, "search": c.search_value, "mean": c.mean, "std": c.std, "values": c.values, "failed": c.failed} for c in all_confirmed],
        "wall_s": {"search (A)": wall_a, "confirmation (B)": wall_b},
    }
    row["A"]["gap"] = row["A"]["search"] - row["A"]["test"]  # search − test: the optimism of the single-seed pick
    row["B"]["gap"] = row["B"]["confirmed_mean"] - row["B"]["test"]  # confirmed − test: should be ~0
    row["B"]["search_gap"] = row["B"]["search"] - row["B"]["test"]
    row["test_B_minus_A"] = row["B"]["test"] - row["A"]["test"]
    return row


def summarise(rows: list[dict]) -> dict:
    mean = lambda values: statistics.fmean(values)  # noqa: E731
    summary = {
        "search_best": mean([r["A"]["search"] for r in rows]),
        "test_A": mean([r["A"]["test"] for r in rows]),
        "gap_A": mean([r["A"]["gap"] for r in rows]),
        "confirmed_mean": mean([r["B"]["confirmed_mean"] for r in rows]),
        "confirmed_std": mean([r["B"]["confirmed_std"] for r in rows]),
        "test_B": mean([r["B"]["test"] for r in rows]),
        "gap_B": mean([r["B"]["gap"] for r in rows]),
        "abs_gap_B": mean([abs(r["B"]["gap"]) for r in rows]),
        "test_B_minus_A": mean([r["test_B_minus_A"] for r in rows]),
        "same_pick": sum(r["A"]["trial"] == r["B"]["trial"] for r in rows),
    }
    summary["targets"] = {
        "confirmed pick tests at least as well as the single-seed pick (mean test B − A >= 0)": summary["test_B_minus_A"] >= 0,
        f"confirmed mean within ±{HONEST_WITHIN} of its test score (mean confirmed − test)": abs(summary["gap_B"]) <= HONEST_WITHIN,
        "the confirmed estimate is closer to its test score than the search score to its own (|gap B| < |gap A|)": abs(summary["gap_B"]) < abs(summary["gap_A"]),
    }
    return summary


def table(rows: list[dict], summary: dict, args) -> Table:
    metric = rows[0]["metric"].removeprefix("val_")
    sizes = rows[0]["splits"]
    what = "smoke: synthetic rows · tiny random BERT" if args.smoke else f"{args.data} · {args.model}"
    title = (f"{what} · {sizes.get('train')} train / {sizes.get('validation')} val / {sizes.get('test')} test · "
             f"{args.trials} trials × {args.epochs} epochs ({args.sampler}) · confirm top {args.top_k} × {args.confirm_seeds} seeds · {metric}")
    result = Table(title=title, caption="A = single-seed pick (search best); B = confirmed pick (best mean over new seeds). gaps: estimate − test")
    columns = ("split seed", "A trial", "search best (val)", "A test", "A gap search−test",
               "B trial", "B confirmed (val)", "B test", "B gap confirmed−test", "B test − A test")
    for column in columns:
        result.add_column(column, justify="right")
    for r in rows:
        result.add_row(
            str(r["split_seed"]), str(r["A"]["trial"]), f"{r['A']['search']:.4f}", f"{r['A']['test']:.4f}", f"{r['A']['gap']:+.4f}",
            str(r["B"]["trial"]), f"{r['B']['confirmed_mean']:.4f} ± {r['B']['confirmed_std']:.4f}", f"{r['B']['test']:.4f}",
            f"{r['B']['gap']:+.4f}", f"{r['test_B_minus_A']:+.4f}",
        )
    s = summary
    result.add_row(
        "[bold]mean[/bold]", f"{s['same_pick']}/{len(rows)} same", f"{s['search_best']:.4f}", f"{s['test_A']:.4f}", f"{s['gap_A']:+.4f}",
        "", f"{s['confirmed_mean']:.4f} ± {s['confirmed_std']:.4f}", f"{s['test_B']:.4f}", f"{s['gap_B']:+.4f}", f"{s['test_B_minus_A']:+.4f}",
        end_section=True,
    )
    return result


def report(args, rows: list[dict], wall: float) -> str:
    settings = {key: value for key, value in vars(args).items() if key not in ("json", "save")}
    return json.dumps({"settings": settings, "rows": rows, "mean": summarise(rows), "wall_s": wall}, indent=2, default=str)


# --- smoke mode: a tiny random BERT and synthetic rows, so CI runs the whole path in seconds ---------

WORDS = {
    "positive": ["good", "great", "love", "happy", "excellent", "nice"],
    "negative": ["bad", "awful", "hate", "sad", "terrible", "poor"],
    "neutral": ["the", "a", "plane", "phone", "today", "is", "it", "was"],
}


SMOKE_SPACE = {  # learning rates a 2-layer random BERT learns the synthetic rows with in two short epochs
    "learning_rate": {"type": "float", "low": 2.0e-3, "high": 1.0e-2, "log": True},
    "unfreeze_depth": {"type": "int", "low": 0, "high": 2},
    "batch_size": 16,
}


def smoke_inputs(folder: Path) -> tuple[Path, Path]:
    """(model folder, CSV): a 2-layer BERT with random weights and a word-level tokenizer, and 400 labelled rows."""
    import pandas as pd
    from transformers import BertConfig, BertModel, BertTokenizerFast

    model = folder / "tiny-bert"
    model.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w for ws in WORDS.values() for w in ws})
    (model / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}).save_pretrained(model)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(model)
    rng, rows = random.Random(0), []
    for _ in range(400):
        label = rng.choice(list(WORDS))
        words = rng.choices(WORDS["neutral"], k=rng.randint(2, 6)) + (rng.choices(WORDS[label], k=2) if label != "neutral" else [])
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    csv = folder / "tiny.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return model, csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2], help="one search per seed, each on its own draw of train/validation/test")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=400)
    parser.add_argument("--val-size", type=int, default=200)
    parser.add_argument("--test-size", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--top-k", type=int, default=2, help="confirm: configurations trained again")
    parser.add_argument("--confirm-seeds", type=int, default=2, help="confirm: new training seeds each")
    parser.add_argument("--concurrent", type=int, default=1, help="trials at once, sharing the cores (1: trials finish in order, see README)")
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--startup", type=int, default=None, help="sampler.n_startup_trials (default: the product's)")
    parser.add_argument("--search-space", default="text_classification")
    parser.add_argument("--model", default="bundled:minilm-l6")
    parser.add_argument("--csv", default=None, help="a CSV of labelled texts instead of the bundled tweets")
    parser.add_argument("--text-column", default=None)
    parser.add_argument("--label-column", default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object (rows, means, targets) instead of the table")
    parser.add_argument("--workdir", default=None, help="an empty folder for the study DBs, MLflow and trial files, kept afterwards (default: a temporary one)")
    parser.add_argument("--save", default=None, help="write the JSON report here after every split seed (a cut run keeps what it measured)")
    parser.add_argument("--smoke", action="store_true", help="tiny random BERT, synthetic rows, tiny sizes: checks the path, not the numbers")
    args = parser.parse_args()
    args.data = args.csv or "bundled:tweets-sentiment"

    import ray
    from transformers.utils import logging as transformers_logging

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    transformers_logging.set_verbosity_error()
    started = time.perf_counter()
    with (contextlib.nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory(prefix="hpo-bias-bench-")) as folder:
        workdir = Path(folder).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        if any(workdir.iterdir()):
            raise SystemExit(f"--workdir {workdir} is not empty: the studies would continue earlier ones")
        if args.smoke:
            model, csv = smoke_inputs(workdir)
            args.model, args.data, args.text_column, args.label_column = str(model), str(csv), "text", "label"
            args.trials, args.epochs, args.train_size, args.val_size, args.test_size, args.max_length = 2, 2, 120, 60, 120, 16
            args.search_space, args.split_seeds, args.top_k, args.confirm_seeds = SMOKE_SPACE, args.split_seeds[:1], 2, 2
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")  # once for every invocation
        rows = []
        for split_seed in args.split_seeds:
            rows.append(run_split(args, workdir, split_seed))
            r = rows[-1]
            LOG.print(f"split seed {split_seed}: A trial {r['A']['trial']} search {r['A']['search']:.4f} test {r['A']['test']:.4f} · "
                      f"B trial {r['B']['trial']} confirmed {r['B']['confirmed_mean']:.4f} ± {r['B']['confirmed_std']:.4f} test {r['B']['test']:.4f} · "
                      f"{sum(r['wall_s'].values()):.0f} s")
            if args.save:
                Path(args.save).write_text(report(args, rows, time.perf_counter() - started))
        ray.shutdown()
    summary = summarise(rows)
    wall = time.perf_counter() - started
    if args.save:
        Path(args.save).write_text(report(args, rows, wall))
    if args.json:
        print(report(args, rows, wall))
        return
    console = Console(width=200)
    console.print(table(rows, summary, args))
    for target, met in summary["targets"].items():
        console.print(f"{'met    ' if met else 'NOT met'}  {target}")
    console.print(f"wall time {wall / 60:.1f} min; {summary['same_pick']} of {len(rows)} split seeds: confirmation kept the search's best")


if __name__ == "__main__":
    main()
