"""Benchmarks stay runnable: their smoke modes run real `hpo` sweeps on CPU and print their tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_utilisation_benchmark_smoke_run_on_cpu():
    done = subprocess.run([sys.executable, "bench/gpu_utilisation.py", "--cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 2  # gpu=1 and gpu=0.5 (2 trials at once) on a 2-core machine
    assert all("2 COMPLETE" in row and "n/a" in row for row in rows)  # no GPU: no busy % or memory


def test_selection_bias_benchmark_smoke_run_answers_both_arms():
    """One search (tiny random BERT, synthetic rows) answered without and with confirmation, both
    picks scored on the test split by the product; --json carries the same rows as the table."""
    done = subprocess.run([sys.executable, "bench/selection_bias.py", "--smoke", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    (row,) = report["rows"]
    assert row["search_trials"] == 2 and row["splits"] == {"train": 120, "validation": 60, "test": 120}
    assert row["A"]["search"] == max(row["search_values"])  # arm A answers with the search's best
    assert len(row["B"]["confirmed_values"]) == 2 and len(row["confirmed"]) == 2  # top 2 × 2 new seeds
    assert row["B"]["trial"] == row["confirmed"][0]["trial"]  # arm B answers with the best confirmed mean
    for arm in ("A", "B"):
        assert 0.0 <= row[arm]["test"] <= 1.0
    assert abs(row["A"]["gap"] - (row["A"]["search"] - row["A"]["test"])) < 1e-12
    assert abs(row["B"]["gap"] - (row["B"]["confirmed_mean"] - row["B"]["test"])) < 1e-12
    assert len(report["mean"]["targets"]) == 3

    sys.path.insert(0, str(ROOT))
    from argparse import Namespace

    from rich.console import Console

    from bench.selection_bias import table

    console = Console(width=200, record=True)
    console.print(table(report["rows"], report["mean"], Namespace(**report["settings"])))
    lines = [line for line in console.export_text().splitlines() if line.startswith("│")]
    assert len(lines) == 2 and lines[1].split("│")[1].strip() == "mean"  # the split seed's row, then the mean


def test_search_replay_smoke_run_replays_the_recorded_table():
    """The replay runs the product's samplers and schedulers on the committed learning curves:
    every search spends its budget (a trial may overshoot it by its last epochs), and ASHA's
    stopped trials cost less than whole ones, so it runs more trials for the same compute."""
    done = subprocess.run([sys.executable, "bench/search_replay.py", "--smoke", "--json", "--workers", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    settings, rows, runs = report["settings"], {row["arm"]: row for row in report["rows"]}, report["runs"]
    assert settings["configurations"] >= 64 and settings["training_seeds"] == [0, 1]
    assert set(rows) == {"random+fifo", "tpe+asha@4"} and len(runs) == 6
    for run in runs:
        assert settings["budget"] <= run["spent"] < settings["budget"] + 4
        assert run["reached_at"] is None or run["reached_at"] <= run["spent"]
    fifo = [run for run in runs if run["arm"] == "random+fifo"]
    asha = [run for run in runs if run["arm"] == "tpe+asha@4"]
    assert all(run["trials"] == settings["budget"] / 4 for run in fifo)  # whole 4-epoch trials
    assert sum(run["trials"] for run in asha) > sum(run["trials"] for run in fifo)
    baseline = rows["random+fifo"]
    if baseline["median_to_target"] == float("inf"):  # beyond the smoke budget: no ratio to itself
        assert baseline["ratio"] != baseline["ratio"]  # NaN
    else:
        assert baseline["ratio"] == 1.0


def test_lora_vs_full_smoke_run_reports_every_arm():
    """One trial per arm on the bundled MiniLM: LoRA trains a small fraction of the parameters."""
    done = subprocess.run([sys.executable, "bench/lora_vs_full.py", "--smoke", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["arm"]: row for row in json.loads(done.stdout)["rows"]}
    assert list(rows) == ["full", "lora", "both"]
    assert rows["full"]["methods"] == ["full"] and rows["lora"]["methods"] == ["lora"]
    assert rows["lora"]["best_trainable"] < rows["full"]["best_trainable"] / 5
    for row in rows.values():
        assert 0.0 <= row["best"] <= 1.0 and row["epoch_s"] > 0 and row["peak_mb"] > 100 and len(row["trials"]) == 1


def test_gpu_check_dry_run_runs_every_step_on_cpu():
    """bench/gpu_check.py --dry-run: the GPU machine's steps, on CPU at tiny sizes, through real
    sweeps; the CUDA-only steps are marked skipped, every other step passes."""
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in done.stdout.splitlines() if line.startswith("│")]
    statuses = {step: status for step, status, *_ in cells if step}
    assert statuses == {"cuda": "skipped", "share (CPU)": "ok", "bf16": "skipped", "fp16": "skipped",
                        "checkpointing off/on": "ok", "lora (CPU)": "ok", "oom retry": "skipped", "curves": "ok"}
    details = {step: detail for step, _, _, detail in cells if step}
    assert details["share (CPU)"].startswith("2 COMPLETE; 2 of 2 at once")
    assert "holds 4 rows" in details["curves"]  # one configuration, one seed, 4 evaluations in its one epoch
