"""The compose stack driven as a user drives it: ``docker-compose`` (v1) or ``docker compose`` (v2)
with docker-compose.yml and docker-compose.cpu.yml, an env file holding the password, and the
host's ``hpo`` talking to the published ports. Used by tests/test_stack_docker.py and bench/stack.py.

Each :class:`ComposeStack` is its own Compose project (containers, network and volumes named
after it) on free host ports, so it never touches a stack a developer runs beside it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU_FILES = ("docker-compose.yml", "docker-compose.cpu.yml")
CPU_SWEEP = ROOT / "sweeps" / "compose-cpu.yaml"
STUDY = "tweets-minilm-cpu"  # CPU_SWEEP's name
WORKERS = ("ray-worker-1", "ray-worker-2")
# Variables a developer may set to build on other bases (docker/build-local-bases.sh prints them).
PASSED_THROUGH = ("PYTHON_IMAGE", "POSTGRES_IMAGE", "PYTORCH_IMAGE", "TORCH_INDEX_URL")
HPO = str(Path(sys.executable).parent / "hpo")


def compose_command() -> list[str] | None:
    """``docker-compose`` (v1) if installed, else ``docker compose`` (v2) if it answers, else None."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def docker_unavailable() -> str | None:
    """Why the stack cannot run here (one line), or None when a Docker engine and Compose answer."""
    if not shutil.which("docker"):
        return "no docker command on PATH"
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["docker info failed"])[-1]
        return f"the Docker engine does not answer ({reason[:160]})"
    if compose_command() is None:
        return "neither docker-compose nor docker compose is installed"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def host_env() -> dict[str, str]:
    """The environment for the host's ``hpo``: no password, no Ray address of another cluster."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for name in ("RAY_ADDRESS", "POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB", "HPO_STUDY_DB"):
        env.pop(name, None)
    return env


class ComposeStack:
    """One project of the CPU stack: ``up``, ``down``, ``compose(...)``, and the URLs the host uses."""

    def __init__(self, workdir: Path, project: str | None = None) -> None:
        self.project = project or f"hpotest{uuid.uuid4().hex[:8]}"
        self.password = secrets.token_hex(16)
        self.ports = {"postgres": free_port(), "mlflow": free_port(), "ray": free_port()}
        self.command = compose_command() or ["docker-compose"]
        self.env_file = workdir / f"{self.project}.env"
        values = {
            "COMPOSE_PROJECT_NAME": self.project,
            "POSTGRES_USER": "hpo", "POSTGRES_PASSWORD": self.password, "POSTGRES_DB": "studies",
            "POSTGRES_PORT": self.ports["postgres"], "MLFLOW_PORT": self.ports["mlflow"], "RAY_DASHBOARD_PORT": self.ports["ray"],
            "HPO_SWEEP": "/sweeps/compose-cpu.yaml",
            **{name: os.environ[name] for name in PASSED_THROUGH if name in os.environ},
        }
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
        self.env_file.chmod(0o600)

    # --- URLs the host uses ---------------------------------------------------------------
    @property
    def job_server(self) -> str:
        return f"http://127.0.0.1:{self.ports['ray']}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def study_db(self) -> str:
        return f"postgresql+psycopg://hpo:{self.password}@127.0.0.1:{self.ports['postgres']}/studies"

    # --- compose --------------------------------------------------------------------------
    def compose_args(self, *args: str) -> list[str]:
        files = [word for name in CPU_FILES for word in ("-f", str(ROOT / name))]
        return [*self.command, "--env-file", str(self.env_file), "-p", self.project, *files, *args]

    def compose_env(self) -> dict[str, str]:
        # .env in the repository and the caller's shell must not override the project's env file
        env = {key: value for key, value in os.environ.items()
               if key not in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB", "HPO_SWEEP",
                              "POSTGRES_PORT", "MLFLOW_PORT", "RAY_DASHBOARD_PORT", *PASSED_THROUGH)}
        return {**env, "COMPOSE_HTTP_TIMEOUT": "300", "DOCKER_CLIENT_TIMEOUT": "300"}

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(self.compose_args(*args), cwd=ROOT, env=self.compose_env(), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-3000:]}")
        return done

    def build(self, timeout: float = 3600) -> None:
        """The two images the stack builds (hpo-orchestrator:0.1.0-cpu and hpo-mlflow), from the layer cache when warm."""
        self.compose("build", "ray-head", "mlflow", timeout=timeout)

    def up(self, timeout: float = 300) -> float:
        """``up -d``, then wait for healthy services and both workers in the Ray cluster; the seconds it took."""
        started = time.monotonic()
        self.compose("up", "-d", timeout=timeout)
        self.wait_ready(timeout - (time.monotonic() - started))
        return time.monotonic() - started

    def wait_ready(self, timeout: float = 300, nodes: int = 3) -> None:
        deadline = time.monotonic() + timeout
        while True:
            health = {service: self.health(service) for service in ("postgres", "mlflow", "ray-head")}
            alive = self.alive_nodes() if health["ray-head"] == "healthy" else 0
            if all(state == "healthy" for state in health.values()) and alive >= nodes:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the stack did not come up in time: {health}, {alive} Ray nodes alive; logs:\n{self.logs(tail=40)}")
            time.sleep(2)

    def container(self, service: str) -> str | None:
        ids = self.compose("ps", "-q", service, check=False).stdout.split()
        return ids[0] if ids else None

    def inspect(self, service: str) -> dict:
        container = self.container(service)
        if container is None:
            return {}
        done = subprocess.run(["docker", "inspect", container], capture_output=True, text=True)
        return json.loads(done.stdout)[0] if done.returncode == 0 else {}

    def health(self, service: str) -> str:
        state = self.inspect(service).get("State", {})
        return (state.get("Health") or {}).get("Status") or state.get("Status") or "missing"

    def hostname(self, service: str) -> str:
        return self.inspect(service)["Config"]["Hostname"]

    def alive_nodes(self) -> int:
        """Ray nodes alive, as the head's GCS sees them (asked from inside the head container)."""
        done = self.compose("exec", "-T", "ray-head", "python", "-c",
                            "import ray; ray.init(address='auto', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))",
                            check=False, timeout=120)
        lines = done.stdout.strip().splitlines()
        return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else 0

    def logs(self, *services: str, tail: int | None = None) -> str:
        args = ["logs", "--no-color"] + ([f"--tail={tail}"] if tail else []) + list(services)
        return self.compose(*args, check=False, timeout=120).stdout

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "-t", "5", check=False, timeout=300)
        self.env_file.unlink(missing_ok=True)

    # --- the host's hpo -------------------------------------------------------------------
    def hpo(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([HPO, *args], capture_output=True, text=True, env=host_env(), timeout=timeout, cwd=ROOT)
        if check and done.returncode != 0:
            raise AssertionError(f"hpo {' '.join(args)} exited {done.returncode}: {done.stderr[-3000:]}")
        return done

    def submit(self, *args: str) -> str:
        done = self.hpo("submit", str(CPU_SWEEP), "--address", self.job_server, "--json", *args)
        return json.loads(done.stdout)["job_id"]

    def job_status(self, job_id: str) -> dict:
        done = self.hpo("status", job_id, "--address", self.job_server, "--db", self.study_db, "--json", check=False)
        return json.loads(done.stdout) if done.stdout.strip().startswith("{") else {"ok": False, "error": done.stderr.strip()}

    def wait_job(self, job_id: str, timeout: float = 900, poll_s: float = 10.0) -> dict:
        """Poll ``hpo status`` until the job is no longer pending or running; its last document."""
        deadline = time.monotonic() + timeout
        while True:
            document = self.job_status(job_id)
            if document.get("job", {}).get("status") not in ("PENDING", "RUNNING"):
                return document
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not finish in {timeout:.0f}s: {document}")
            time.sleep(poll_s)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False
