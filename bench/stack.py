"""The team stack on this machine: image builds (cold and warm), `up` to healthy, and a 4-trial
sweep submitted to the 2-worker CPU stack against the same sweep run by `hpo run` here.

Needs a Docker engine and Compose (v1 or v2); the base images come from the variables
docker/build-local-bases.sh prints (PYTHON_IMAGE, POSTGRES_IMAGE) or the registry, and
TORCH_INDEX_URL as for `docker compose build`.

Usage:  python bench/stack.py [--skip-cold] [--json out.json]
  --skip-cold   do not remove the images first (the cold build re-downloads every package)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.compose_stack import CPU_SWEEP, HPO, ComposeStack, docker_unavailable, host_env  # noqa: E402

IMAGES = ("hpo-orchestrator:0.1.0-cpu", "hpo-mlflow:3.17.2")


def image_size_mb(image: str) -> float | None:
    done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True, text=True)
    return int(done.stdout.strip()) / 1e6 if done.returncode == 0 else None


def timed_build(stack: ComposeStack) -> float:
    started = time.monotonic()
    stack.build()
    return time.monotonic() - started


def remove_images() -> None:
    """The images and their build cache (the classic builder's cache is the images' parent layers)."""
    subprocess.run(["docker", "rmi", "-f", *IMAGES], capture_output=True)
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)


def local_sweep(folder: Path) -> Path:
    """sweeps/compose-cpu.yaml with the stores of a laptop: SQLite files and a folder here."""
    sweep = yaml.safe_load(CPU_SWEEP.read_text())
    sweep["storage"] = {"study_db": f"sqlite:///{folder / 'hpo.db'}", "mlflow": f"sqlite:///{folder / 'mlruns.db'}", "results_dir": str(folder / "runs")}
    sweep.pop("cluster", None)
    path = folder / "compose-cpu-local.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    why = docker_unavailable()
    if why:
        sys.exit(f"bench/stack.py needs Docker: {why}")

    figures: dict[str, float | None] = {}
    workdir = Path(tempfile.mkdtemp(prefix="hpo-stack-bench"))
    stack = ComposeStack(workdir, project="hpobench")
    if not args.skip_cold:
        remove_images()
        figures["build_cold_s"] = timed_build(stack)
    figures["build_warm_s"] = timed_build(stack)
    for image in IMAGES:
        figures[f"size_mb {image}"] = image_size_mb(image)
    try:
        figures["up_to_healthy_s"] = stack.up(timeout=600)
        started = time.monotonic()
        job = stack.submit()
        document = stack.wait_job(job, timeout=1800, poll_s=1.0)
        figures["stack_sweep_s"] = time.monotonic() - started
        if document["job"]["status"] != "SUCCEEDED":
            sys.exit(f"the submitted sweep ended {document['job']['status']}: {document}")
    finally:
        stack.down()

    started = time.monotonic()
    done = subprocess.run([HPO, "run", str(local_sweep(workdir)), "--json"], capture_output=True, text=True, env=host_env())
    figures["local_sweep_s"] = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"hpo run failed: {done.stderr[-2000:]}")
    figures["ratio"] = figures["stack_sweep_s"] / figures["local_sweep_s"]

    table = Table(title="the CPU stack on this machine (2 workers x 1 CPU; 4 trials of sweeps/compose-cpu.yaml)", title_justify="left")
    table.add_column("what")
    table.add_column("measured", justify="right")
    for name, value in figures.items():
        table.add_row(name, "-" if value is None else f"{value:,.2f}" if name == "ratio" else f"{value:,.0f}")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
