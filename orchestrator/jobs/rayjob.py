"""``hpo submit --emit rayjob``: the same job as a KubeRay ``RayJob`` (and the ConfigMap holding the sweep).

KubeRay creates a Ray cluster from ``docker/Dockerfile``'s image, submits ``hpo run`` to it, and
deletes the cluster when the job ends. The sweep file and the files it names travel in a
ConfigMap mounted at :data:`SWEEP_DIR` on every node; each ``${VAR}`` of the sweep's storage URLs
comes from a Kubernetes Secret by reference (``secretKeyRef``), so no password is in the manifest.
Field names follow KubeRay's ``ray.io/v1`` API (``RayJobSpec``, ``RayClusterSpec``).
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import yaml

from orchestrator.errors import ConfigError
from orchestrator.jobs.job_server import variables
from orchestrator.jobs.submit import STOP_GRACE_S, JobPlan, entrypoint_command
from orchestrator.secrets import mask
from orchestrator.sweep.config import SweepConfig

IMAGE = "hpo-orchestrator:0.1.0"  # docker/Dockerfile, as docker-compose.yml tags it
SECRET = "hpo-db"
SWEEP_DIR = "/sweeps"
TTL_SECONDS_AFTER_FINISHED = 3600  # keep the finished cluster an hour for `kubectl logs`, then delete it
BACKOFF_LIMIT = 2  # retries on a new cluster; each resumes the study, as a rerun of `hpo run` does


def manifests(config: SweepConfig, plan: JobPlan, sweep: Path, image: str = IMAGE, secret: str = SECRET) -> list[dict]:
    """[ConfigMap, RayJob] for ``kubectl apply -f``. Raises :class:`ConfigError` for a sweep a RayJob would lose."""
    import ray

    for key in ("study_db", "mlflow"):
        if getattr(config.storage, key).startswith("sqlite"):
            raise ConfigError(f"storage.{key}", getattr(config.storage, key),
                              "a RayJob's cluster is deleted when the job ends, and a SQLite file on it with it; give a database server "
                              "(postgresql+psycopg://user:${PGPASSWORD}@host/db) or, for MLflow, its tracking server (http://mlflow:5000)")
    name = _dns_name(f"hpo-{config.name}")
    files = _sweep_files(config, plan, sweep)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-sweep", "labels": _labels(config)},
        "data": {key: text for key, (_, text) in files.items()},
    }
    volume = {"name": "sweep", "configMap": {"name": f"{name}-sweep", "items": [{"key": key, "path": path} for key, (path, _) in files.items()]}}
    env = [{"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": variable}}} for variable in _secret_variables(plan)]

    def pod(container: str, limits: dict) -> dict:
        spec = {"name": container, "image": image, "resources": {"limits": limits},
                "volumeMounts": [{"name": "sweep", "mountPath": SWEEP_DIR, "readOnly": True}]}
        if env:
            spec["env"] = env
        return {"spec": {"containers": [spec], "volumes": [volume]}}

    gpu = config.resources.gpu
    worker_limits = {"cpu": _quantity(max(config.resources.cpu, 1)), "memory": f"{int(config.resources.memory_gb or 8)}Gi"}
    if gpu:
        worker_limits["nvidia.com/gpu"] = str(max(1, int(gpu)))
    ray_job = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "labels": _labels(config)},
        "spec": {
            "entrypoint": entrypoint_command(plan.python, f"{SWEEP_DIR}/{plan.sweep_file}", plan.run_args),
            "metadata": dict(plan.metadata),
            "runtimeEnvYAML": yaml.safe_dump({"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S)}}),
            "submissionMode": "K8sJobMode",  # a Kubernetes Job runs `ray job submit` once the cluster is up
            "entrypointNumCpus": 0,  # hpo run schedules trials; it takes no CPU from them
            "entrypointNumGpus": 0,
            "suspend": False,
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
            "backoffLimit": BACKOFF_LIMIT,
            "rayClusterSpec": {
                "rayVersion": ray.__version__,
                "enableInTreeAutoscaling": False,
                "headGroupSpec": {
                    "serviceType": "ClusterIP",
                    "rayStartParams": {"num-gpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": pod("ray-head", {"cpu": "2", "memory": "8Gi"}),
                },
                "workerGroupSpecs": [{
                    "groupName": "gpu" if gpu else "cpu",
                    "replicas": config.budget.max_concurrent,
                    "minReplicas": 0,
                    "maxReplicas": config.budget.max_concurrent,
                    "rayStartParams": {},
                    "template": pod("ray-worker", worker_limits),
                }],
            },
        },
    }
    return [config_map, ray_job]


def unreachable_from_pods(config: SweepConfig) -> list[str]:
    """One warning per place the sweep writes that the RayJob's pods cannot reach: a store on
    ``localhost`` (inside a pod, the pod itself) or a ``results_dir`` on the pod's own disk."""
    warnings = []
    for key in ("study_db", "mlflow"):
        url = str(getattr(config.storage, key))
        host = _host(url)
        if host is not None and (host == "localhost" or host.startswith("127.") or host == "::1"):
            warnings.append(f"warning: storage.{key} names host {host}, which inside a pod is the pod itself; give the server's "
                            f"address as the pods see it, e.g. its Kubernetes service name ({mask(url)})")
    results_dir = str(config.storage.results_dir)
    if "://" not in results_dir:
        warnings.append(f"warning: storage.results_dir {results_dir} is a folder on each pod's own disk, not shared between the pods and "
                        "deleted with the cluster; give shared storage (s3://bucket/hpo, gs://...) or mount a shared volume there")
    return warnings


def _host(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).hostname
    except ValueError:
        return None


def to_yaml(documents: list[dict]) -> str:
    """The manifests as one YAML stream, plain (no anchors: the head and the workers repeat what they
    share); the files in the ConfigMap as readable blocks."""

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data) -> bool:
            return True

    def text(dumper, value: str):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump_all(documents, Dumper=Dumper, sort_keys=False)


def _sweep_files(config: SweepConfig, plan: JobPlan, sweep: Path) -> dict[str, tuple[str, str]]:
    """ConfigMap key -> (path under SWEEP_DIR, text): the sweep file and the files it names in its folder."""
    folder = Path(plan.working_dir)
    paths = [Path(sweep).resolve()]
    if config.trial.function and ".py:" in config.trial.function:
        paths.append(Path(config.trial.function.rpartition(":")[0]))
    raw = yaml.safe_load(Path(sweep).read_text())
    if isinstance(raw.get("search_space"), str) and (folder / raw["search_space"]).is_file():
        paths.append(folder / raw["search_space"])
    files: dict[str, tuple[str, str]] = {}
    for path in paths:
        try:
            relative = Path(path).resolve().relative_to(folder.resolve()).as_posix()
        except ValueError:
            continue  # an absolute path elsewhere: it must exist in the image
        files[re.sub(r"[^-._a-zA-Z0-9]", "_", relative)] = (relative, Path(path).read_text())
    return files


def _secret_variables(plan: JobPlan) -> list[str]:
    """The environment variables the sweep's storage URLs name: each comes from the Secret."""
    raw_storage = yaml.safe_load(Path(plan.working_dir, plan.sweep_file).read_text()).get("storage") or {}
    return sorted({name for value in raw_storage.values() if isinstance(value, str) for name in variables(value)})


def _labels(config: SweepConfig) -> dict[str, str]:
    return {"app.kubernetes.io/name": "hpo", "hpo/study": _dns_name(config.name)}


def _dns_name(text: str) -> str:
    """A Kubernetes object name (RFC 1123: lower case, digits, '-', at most 63 characters)."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")


def _quantity(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{int(value * 1000)}m"
