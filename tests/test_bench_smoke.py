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

    from bench.selection_bias import table
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(table(report["rows"], report["mean"], Namespace(**report["settings"])))
    lines = [line for line in console.export_text().splitlines() if line.startswith("│")]
    assert len(lines) == 2 and lines[1].split("│")[1].strip() == "mean"  # the split seed's row, then the mean
