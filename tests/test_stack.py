"""The shipped stack, checked without a Docker engine: docker-compose.yml, the images it builds
and the sweep file it runs must agree on services, ports, volumes and variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from orchestrator.config import load_sweep

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines() if line and not line.startswith("#"))


def test_the_stack_has_every_service_of_the_topology():
    assert set(SERVICES) == {"postgres", "mlflow", "ray-head", "ray-worker", "hpo"}
    assert SERVICES["hpo"]["profiles"] == ["sweep"] and SERVICES["hpo"]["restart"] == "no"  # one-shot


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_has_a_pinned_image_or_a_build_that_exists(name):
    service = SERVICES[name]
    if "build" in service:
        dockerfile = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
        assert dockerfile.is_file(), dockerfile
        text = dockerfile.read_text()
        assert re.search(r"^USER (?!root)\w+", text, re.M), f"{dockerfile.name} must run as a non-root user"
        assert "HEALTHCHECK" in text or "healthcheck" in service
    image = service["image"]
    assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image version, got {image}"


def test_every_variable_the_compose_file_uses_is_in_env_example():
    used = set(re.findall(r"(?<!\$)\$\{(\w+)\}", (ROOT / "docker-compose.yml").read_text()))
    assert used and used <= set(ENV_EXAMPLE), used - set(ENV_EXAMPLE)


def test_no_secret_is_written_into_the_compose_file_or_the_images():
    for path in [ROOT / "docker-compose.yml", *sorted((ROOT / "docker").glob("*Dockerfile"))]:
        text = path.read_text()
        assert ENV_EXAMPLE["POSTGRES_PASSWORD"] not in text
        assert not re.search(r"PASSWORD\s*[:=]\s*(?!\$\{)\S", text), f"{path.name} sets a password literally"


def test_named_volumes_are_declared_and_shared_where_trials_write():
    declared = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in declared, f"{name}: volume {source} is not declared"
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    # checkpoints and results: the driver and every Ray node see the same folder
    for name in ("ray-head", "ray-worker", "hpo"):
        assert "results:/results" in SERVICES[name]["volumes"]


def test_gpu_workers_reserve_gpus_and_the_head_runs_no_trials():
    devices = SERVICES["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "--num-gpus=0" in SERVICES["ray-head"]["command"]
    assert "--address=ray-head:6379" in SERVICES["ray-worker"]["command"]
    assert "--port=6379" in SERVICES["ray-head"]["command"]
    assert "--num-cpus=0 --num-gpus=0" in " ".join(SERVICES["hpo"]["entrypoint"])


def test_the_sweep_the_stack_runs_points_at_the_stacks_services(monkeypatch):
    for key, value in ENV_EXAMPLE.items():
        monkeypatch.setenv(key, value)
    sweep = ROOT / ENV_EXAMPLE["HPO_SWEEP"].replace("/sweeps/", "sweeps/")
    config = load_sweep(sweep)
    assert config.storage.study_db == (
        f"postgresql+psycopg://{ENV_EXAMPLE['POSTGRES_USER']}:{ENV_EXAMPLE['POSTGRES_PASSWORD']}@postgres:5432/{ENV_EXAMPLE['POSTGRES_DB']}"
    )
    assert config.storage.mlflow == "http://mlflow:5000" and "5000:5000" in SERVICES["mlflow"]["ports"]
    assert "postgres:5432/mlflow" in SERVICES["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert "CREATE DATABASE mlflow" in (ROOT / "docker" / "postgres-init.sql").read_text()
    assert config.storage.results_dir == "/results" and config.cluster.address == "auto"
    assert "${POSTGRES_PASSWORD}" in sweep.read_text()  # read from the environment, never written down
    assert 0 < config.resources.gpu <= 1
