"""The GPU benchmark stays runnable: its CPU smoke mode runs real `hpo` sweeps and prints the table."""

from __future__ import annotations

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
