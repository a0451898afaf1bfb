"""Where a sweep's Ray comes from: ``cluster.address`` unset means a Ray started here, whatever else runs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

START_AND_SAY_WHERE = (
    "import ray; from orchestrator.ray_session import start_ray; "
    "assert start_ray(None, debug=False); print(ray.get_runtime_context().gcs_address); ray.shutdown()"
)


def test_an_unset_address_starts_ray_here_even_where_ray_start_left_a_cluster():
    # `ray start` leaves the head's address in RAY_TMPDIR/ray/ray_current_cluster, and a bare ray.init()
    # joins it; this one names an address where nothing listens, so joining it would fail.
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=str(ray_tmp), PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    started = subprocess.run([sys.executable, "-c", START_AND_SAY_WHERE], env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    address = started.stdout.strip().splitlines()[-1]
    assert address and address != "127.0.0.1:9"
