"""The shipped stack, checked without a Docker engine: docker-compose.yml (and the CPU stack,
docker-compose.cpu.yml over it), the images it builds and the sweep files it runs must agree on
services, ports, volumes and variables, and parse for Compose v1 and v2. tests/test_stack_docker.py
builds and runs it for real."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.sweep.config import load_sweep

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
CPU = yaml.safe_load((ROOT / "docker-compose.cpu.yml").read_text())
ENV_EXAMPLE_TEXT = (ROOT / ".env.example").read_text()
ENV_EXAMPLE = dict(line.split("=", 1) for line in ENV_EXAMPLE_TEXT.splitlines() if line and not line.startswith("#"))
DOCKERFILES = sorted((ROOT / "docker").rglob("*Dockerfile"))


def default_of(value: str) -> str:
    """A compose value with its ``${VAR:-default}`` references replaced by their defaults."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


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
    image = default_of(service["image"])
    assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image version, got {image}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_base_image_is_a_build_argument_and_the_build_needs_no_buildkit(dockerfile):
    """A machine without a registry builds the same Dockerfiles on local bases (docker/build-local-bases.sh);
    Docker 20.10's classic builder (Compose v1) has no RUN --mount and no heredocs."""
    text = dockerfile.read_text()
    arguments = dict(re.findall(r"^ARG (\w+)=(\S*)", text, re.M))
    for base in re.findall(r"^FROM (\S+)", text, re.M):
        if base == "scratch":
            continue
        name = re.fullmatch(r"\$\{(\w+)\}", base)
        assert name and name.group(1) in arguments, f"{dockerfile.name}: FROM {base} is not a build argument"
        assert ":" in arguments[name.group(1)], f"{dockerfile.name}: pin the default of {name.group(1)}"
    assert "--mount" not in text and "<<" not in text, f"{dockerfile.name} needs BuildKit"
    if dockerfile.parent.name == "local":
        return
    final = text[text.rindex("\nFROM "):]  # the final stage: no build input (CA certificates, wheels) reaches it
    assert "build-inputs" not in final and "ca-certificates" not in final and "wheels" not in final


def test_the_official_images_stay_the_defaults():
    assert default_of(SERVICES["postgres"]["image"]) == "postgres:16.4"
    assert default_of(SERVICES["ray-head"]["build"]["args"]["BASE_IMAGE"]).startswith("pytorch/pytorch:")
    assert default_of(SERVICES["mlflow"]["build"]["args"]["PYTHON_IMAGE"]) == "python:3.11-slim"
    assert default_of(CPU["services"]["ray-head"]["build"]["args"]["BASE_IMAGE"]) == "python:3.11-slim"


@pytest.mark.parametrize("compose_file", ["docker-compose.yml", "docker-compose.cpu.yml"])
def test_every_variable_the_compose_files_use_is_in_env_example(compose_file):
    text = (ROOT / compose_file).read_text()
    required = set(re.findall(r"(?<!\$)\$\{(\w+)\}", text))
    assert required <= set(ENV_EXAMPLE), required - set(ENV_EXAMPLE)
    optional = set(re.findall(r"(?<!\$)\$\{(\w+):?-", text))  # with a default: documented, commented out
    assert all(re.search(rf"^#? ?{name}=", ENV_EXAMPLE_TEXT, re.M) for name in optional), optional


def test_no_secret_is_written_into_the_compose_file_or_the_images():
    for path in [ROOT / "docker-compose.yml", ROOT / "docker-compose.cpu.yml", *DOCKERFILES, ROOT / "docker" / "build-local-bases.sh"]:
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


def test_the_head_starts_once_the_stores_answer():
    """A sweep submitted right after `up -d` runs on the head and opens the study and MLflow at once."""
    assert SERVICES["ray-head"]["depends_on"] == {"postgres": {"condition": "service_healthy"}, "mlflow": {"condition": "service_healthy"}}
    assert "depends_on" not in CPU["services"]["ray-head"]  # the CPU stack keeps it


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
    assert config.storage.mlflow == "http://mlflow:5000" and default_of(SERVICES["mlflow"]["ports"][0]) == "5000:5000"
    assert "postgres:5432/mlflow" in SERVICES["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert "CREATE DATABASE mlflow" in (ROOT / "docker" / "postgres-init.sql").read_text()
    assert config.storage.results_dir == "/results" and config.cluster.address == "auto"
    assert "${POSTGRES_PASSWORD}" in sweep.read_text()  # read from the environment, never written down
    assert 0 < config.resources.gpu <= 1


def test_the_cpu_stack_runs_a_head_without_trials_and_two_one_cpu_workers(monkeypatch):
    services = CPU["services"]
    assert services["ray-worker"] == {"profiles": ["gpu"]}  # the GPU worker stays off
    workers = [name for name in services if name.startswith("ray-worker-")]
    assert workers == ["ray-worker-1", "ray-worker-2"]
    for name in workers:
        command = services[name]["command"]
        assert "--address=ray-head:6379" in command and "--num-cpus=1" in command and "--num-gpus=0" in command
        assert "results:/results" in services[name]["volumes"] and "deploy" not in services[name]
        assert services[name]["build"]["args"]["PIP_CONSTRAINT_FILE"] == "constraints/cpu.txt"
        assert (ROOT / services[name]["build"]["args"]["PIP_CONSTRAINT_FILE"]).is_file()
    assert "--num-cpus=0" in services["ray-head"]["command"]
    for key, value in ENV_EXAMPLE.items():
        monkeypatch.setenv(key, value)
    config = load_sweep(ROOT / services["hpo"]["environment"]["HPO_SWEEP"].replace("/sweeps/", "sweeps/"))
    assert config.resources.cpu == 1 and config.resources.gpu == 0  # one trial per worker at a time
    assert config.storage.study_db.endswith("@postgres:5432/studies") and config.storage.mlflow == "http://mlflow:5000"
    assert config.storage.results_dir == "/results" and config.cluster.address == "auto" and config.registered_model


# Top-level keys of the Compose Specification (Compose v2). v1 (docker-compose 1.29) knows all of
# them but `name` and `include`, which it rejects ("does not match any of the regexes: '^x-'").
COMPOSE_SPEC_TOP_LEVEL = {"version", "name", "include", "services", "networks", "volumes", "secrets", "configs"}
V1_REJECTS = {"name", "include"}


@pytest.mark.parametrize("document", [COMPOSE, CPU], ids=["docker-compose.yml", "docker-compose.cpu.yml"])
def test_the_compose_files_use_only_keys_both_compose_versions_accept(document):
    keys = {key for key in document if not key.startswith("x-")}
    assert keys <= COMPOSE_SPEC_TOP_LEVEL - V1_REJECTS, keys
    assert "version" not in document  # obsolete in v2, which warns about it
    assert "COMPOSE_PROJECT_NAME" in ENV_EXAMPLE  # the project name, set another way than `name:`


def _compose_commands() -> list[list[str]]:
    commands = []
    if shutil.which("docker-compose"):
        commands.append(["docker-compose"])
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        commands.append(["docker", "compose"])
    return commands


@pytest.mark.stack  # with the stack tests: CI installs docker-compose for them
@pytest.mark.parametrize("files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.cpu.yml"]], ids=["gpu", "cpu"])
def test_the_installed_compose_parses_the_stack(files, tmp_path):
    """`docker-compose config` (v1) and `docker compose config` (v2), whichever is installed: CI has v1."""
    commands = _compose_commands()
    if not commands:
        if os.environ.get("HPO_REQUIRE_DOCKER"):
            pytest.fail("HPO_REQUIRE_DOCKER is set but neither docker-compose nor docker compose is installed")
        pytest.skip("neither docker-compose (v1) nor docker compose (v2) is installed")
    env_file = tmp_path / "stack.env"
    env_file.write_text(ENV_EXAMPLE_TEXT)
    environment = {key: value for key, value in os.environ.items() if key not in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME")}
    for command in commands:
        arguments = [*command, "--env-file", str(env_file), *(word for name in files for word in ("-f", str(ROOT / name))), "config"]
        done = subprocess.run(arguments, capture_output=True, text=True, cwd=ROOT, env=environment)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
        services = yaml.safe_load(done.stdout)["services"]
        assert {"postgres", "mlflow", "ray-head", "ray-worker", "hpo"} <= set(services)
        assert ENV_EXAMPLE["POSTGRES_PASSWORD"] in services["postgres"]["environment"]["POSTGRES_PASSWORD"]  # from the env file
