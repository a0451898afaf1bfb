"""Everything a run will write to, and the Ray it will run on, checked before anything is written.

``hpo validate`` and ``hpo run`` both call :func:`check_targets` (through
:func:`orchestrator.run.runner.validate`), so they agree; the CLI checks the files its options name
(``--json-summary``, ``--out``) with :func:`check_output_file`. Every problem is a
:class:`ConfigError` naming the field, the value (passwords masked) and the fix.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from pathlib import Path

from orchestrator.errors import ConfigError
from orchestrator.run.ray_session import check_ray_address
from orchestrator.run.resources import GIB
from orchestrator.secrets import MISREAD_USERINFO_FIX, misread_userinfo
from orchestrator.storage.study import check_reachable
from orchestrator.sweep import default_stores
from orchestrator.sweep.config import SweepConfig
from orchestrator.sweep.sweep_sections import Resources

# MLflow tracking stores `hpo run` can log to: MLflow's SQLAlchemy databases
# (mlflow.store.db.db_types.DATABASE_ENGINES) and a tracking server.
MLFLOW_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
MLFLOW_SERVERS = ("http", "https")
_MLFLOW_EXAMPLES = f"{default_stores.MLFLOW}, postgresql+psycopg://user@host/mlflow or http://mlflow-server:5000"


def check_targets(config: SweepConfig) -> None:
    """The study database, the MLflow store, ``results_dir``, ``cluster.address`` and, when the
    run starts a Ray here, whether this machine can hold one trial. Writes nothing."""
    check_reachable(config.storage.study_db)
    check_mlflow(config.storage.mlflow)
    check_folder(config.storage.results_dir, "storage.results_dir")
    check_ray_address(config.cluster.address, "cluster.address")
    check_resources(config)


def check_mlflow(uri: str, field: str = "storage.mlflow") -> None:
    """A tracking URI MLflow can log to from here: a reachable database (a SQLite file's folder
    exists) or a tracking server that answers its health check."""
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme in MLFLOW_SERVERS:
        _check_mlflow_server(uri, field)
    elif scheme.split("+")[0] in MLFLOW_DATABASES:
        check_reachable(uri, field, backends=MLFLOW_DATABASES)
    elif scheme in ("", "file") or len(scheme) == 1:  # a path, file:///path, or C:\path
        raise ConfigError(field, uri, f"MLflow's file store is not supported (MLflow 3 refuses it); use a database or a server: {_MLFLOW_EXAMPLES}")
    else:
        raise ConfigError(field, uri, f"unsupported scheme {scheme!r}; MLflow tracking here is {', '.join(MLFLOW_DATABASES + MLFLOW_SERVERS)}, e.g. {_MLFLOW_EXAMPLES}")


def _check_mlflow_server(uri: str, field: str) -> None:
    """An MLflow server must answer its health check (quickly: MLflow's own client retries for minutes)."""
    import urllib.error
    import urllib.request

    if misread_userinfo(uri):
        raise ConfigError(field, uri, MISREAD_USERINFO_FIX)
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:  # its message may quote a piece of the password
        raise ConfigError(field, uri, "not a valid URL; give http://HOST:PORT, e.g. http://mlflow-server:5000, and "
                                            "percent-encode '/', '@', ':', '#' and '?' in a user name or password (e.g. %2F for '/')") from None
    if not parts.hostname:
        raise ConfigError(field, uri, "the URL names no host; give http://HOST:PORT, e.g. http://mlflow-server:5000")
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(health, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError:
        return  # it answered (perhaps 401 without credentials): reachable
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError(field, uri, f"MLflow server not reachable ({reason}); start it or fix the URL") from None


def check_folder(path: str | os.PathLike[str], field: str) -> None:
    """A folder the run writes into: an existing folder, or one that can be created."""
    folder = Path(path)
    existing = next((p for p in (folder, *folder.absolute().parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        where = "it is a file" if existing == folder else f"{existing} is a file"
        raise ConfigError(field, str(path), f"{where}, not a folder; give a folder (created if missing), e.g. {default_stores.RESULTS_DIR}")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "the folder" if existing == folder else f"{existing}"
        raise ConfigError(field, str(path), f"{where} is not writable; give a folder you can write to")


def check_output_file(path: Path, field: str) -> None:
    """A file a command will write: its folder exists and is writable, and it is not a folder."""
    if path.is_dir():
        raise ConfigError(field, str(path), "it is a folder; give the path of a file (in it, or elsewhere)")
    folder = path.absolute().parent
    if not folder.is_dir():
        raise ConfigError(field, str(path), f"folder {path.parent} does not exist; create it or change the path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(field, str(path), f"folder {path.parent} is not writable; change the path")


def check_resources(config: SweepConfig) -> None:
    """One trial must fit some node, or Ray leaves it PENDING for ever.

    Against the running Ray when this process already joined one; against this machine when the
    run starts a local Ray (``cluster.address`` null and no ``RAY_ADDRESS``). A cluster's nodes are
    only known once ``hpo run`` joins it, which checks them again before writing anything.
    """
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        from orchestrator.run.resources import check_some_node_fits

        check_some_node_fits(config.resources, ray.nodes())
    elif config.cluster.address in (None, "local") and not os.environ.get("RAY_ADDRESS"):
        check_fits_this_machine(config.resources)


def check_fits_this_machine(resources: Resources) -> None:
    """The local Ray ``hpo run`` starts gets this machine's CPUs and GPUs; memory is bounded by its RAM."""
    local = "cluster.address is null, so trials run on a Ray started on this machine"
    cpus = os.cpu_count() or 1
    if resources.cpu > cpus:
        raise ConfigError("resources.cpu", resources.cpu, f"this machine has {cpus} CPUs and {local}; ask for at most {cpus} per trial, or set cluster.address")
    if resources.gpu > 0:
        gpus = local_gpu_count()
        if gpus is not None and resources.gpu > gpus:
            have = "no GPU" if gpus == 0 else f"{gpus} GPU{'s' * (gpus > 1)}"
            most = "set gpu: 0" if gpus == 0 else f"ask for at most {gpus} per trial"
            raise ConfigError("resources.gpu", resources.gpu, f"this machine has {have} and {local}; {most}, or set cluster.address to a cluster with GPU nodes")
    memory = _physical_memory()
    if resources.memory_gb is not None and memory is not None and resources.memory_gb * GIB > memory:
        total = f"{memory / GIB:.3g}"
        raise ConfigError("resources.memory_gb", resources.memory_gb,
                          f"this machine has {total} GiB of memory and {local}; ask for less than {total}, or set cluster.address")


def local_gpu_count() -> int | None:
    """The GPUs a Ray started here would get (it honours CUDA_VISIBLE_DEVICES); None if unknown."""
    try:
        from ray._private import accelerators

        manager = accelerators.get_accelerator_manager_for_resource("GPU")
        if manager is None:
            return None
        count = manager.get_current_node_num_accelerators()
        visible = manager.get_current_process_visible_accelerator_ids()
        return min(count, len(visible)) if visible is not None else count
    except Exception:  # noqa: BLE001 - a private Ray API: when it moves, `hpo run` still checks the nodes
        return None


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
