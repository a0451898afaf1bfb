"""Where a sweep's Ray comes from: ``cluster.address`` unset means a Ray started here, whatever else runs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

START_AND_SAY_WHERE = (
    "import ray; from orchestrator.run.ray_session import start_ray; "
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


def test_hpo_run_leaves_no_ray_process_behind(tmp_path):
    """Ray starts in a background thread while the sweep is prepared, and hpo exits without the
    interpreter's teardown: still, once hpo run has exited, none of the processes of its Ray
    (GCS, raylet, workers, all of which inherit its environment) is left."""
    import uuid

    import yaml

    marker = uuid.uuid4().hex
    example = Path(__file__).resolve().parent.parent / "examples" / "byo_function"
    sweep = yaml.safe_load((example / "sweep.yaml").read_text())
    sweep.update(trial={"function": f"{example / 'train.py'}:main", "max_epochs": 1}, budget={"n_trials": 1, "max_concurrent": 1},
                 storage={"study_db": f"sqlite:///{tmp_path / 'hpo.db'}", "mlflow": f"sqlite:///{tmp_path / 'mlruns.db'}",
                          "results_dir": str(tmp_path / "runs")})
    sweep["search_space"]["epochs"] = 1
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    env.update(HPO_TEST_RAY_MARKER=marker, HF_HUB_OFFLINE="1")
    done = subprocess.run([str(Path(sys.executable).with_name("hpo")), "run", "sweep.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _processes_with(f"HPO_TEST_RAY_MARKER={marker}".encode()) == []


def test_the_process_scan_sees_a_live_process():
    """The check above can fail: a running child with the marker in its environment is found."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, "HPO_TEST_RAY_MARKER": "probe-1"})
    try:
        assert _processes_with(b"HPO_TEST_RAY_MARKER=probe-1") == [child.pid]
    finally:
        child.kill()
        child.wait()


def _processes_with(entry: bytes) -> list[int]:
    """Process ids whose environment holds ``entry`` (zombies, already dead, are not counted)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z" and entry in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except (OSError, IndexError):  # gone meanwhile, or another user's
            continue
    return found
