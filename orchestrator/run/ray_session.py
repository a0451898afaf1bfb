"""Starting or joining Ray for one sweep invocation."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import urllib.parse

from orchestrator.errors import ConfigError
from orchestrator.progress.phases import phase
from orchestrator.secrets import mask

ADDRESS_FORMS = "auto (on a node of the cluster), HOST:6379 (the head's GCS address) or ray://HOST:10001 (Ray Client)"


def check_ray_address(address: str | None, field: str) -> None:
    """Raise :class:`ConfigError` unless ``address`` has a form ``ray.init`` accepts: None or
    ``local`` (start Ray here), ``auto``, ``HOST:PORT`` or ``ray://HOST[:PORT]``. Connects to nothing."""
    if address is None or address in ("auto", "local"):
        return
    scheme, separator, rest = address.partition("://")
    if not separator:
        scheme, rest = "", address
    if scheme in ("http", "https"):
        raise ConfigError(field, address, f"that is a web address (the dashboard's or the job API's): hpo submit sends a sweep there; to run it from here give {ADDRESS_FORMS}")
    if scheme not in ("", "ray"):
        raise ConfigError(field, address, f"unsupported scheme {scheme!r}; give {ADDRESS_FORMS}")
    try:
        parts = urllib.parse.urlsplit("//" + rest)
        port = parts.port
    except ValueError:
        parts, port = None, None
    well_formed = (
        parts is not None and parts.hostname and not any(c.isspace() for c in address)
        and parts.path in ("", "/") and not parts.query and not parts.fragment
        and (port is not None or scheme == "ray")  # Ray Client defaults to port 10001; a GCS address needs one
        and (port is None or 0 < port < 65536)
    )
    if not well_formed:
        raise ConfigError(field, address, f"not a Ray address; give {ADDRESS_FORMS}")


def ray_target(address: str | None) -> str:
    """Where :func:`start_ray` goes: ``address``, else RAY_ADDRESS, else "local". Unset, ray.init
    would join the last cluster `ray start` left on this machine: "start Ray here" means here."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def joining(address: str | None) -> str:
    """The phase of starting or joining Ray at ``address``, as progress names it."""
    target = ray_target(address)
    return "starting Ray on this machine" if target == "local" else f"joining the Ray cluster at {mask(target)}"


def start_ray(address: str | None, debug: bool, announce: bool = True) -> bool:
    """Start Ray here (``address`` None) or join a cluster; return True when this call started or
    joined it (and so must shut it down), False when Ray was already initialised. ``announce``:
    the start is a progress phase of its own."""
    import ray

    if ray.is_initialized():
        return False
    address = ray_target(address)
    if address not in ("local", "auto"):
        _use_ray_auth_token_if_any()
    with phase(joining(address)) if announce else contextlib.nullcontext(), _children_ignore_sigterm():
        ray.init(
            address=address,
            num_cpus=os.cpu_count() if address == "local" else None,
            include_dashboard=False,
            log_to_driver=debug,
            logging_level=logging.INFO if debug else logging.ERROR,
            configure_logging=True,
        )
    if not debug:
        # ray.init resets Ray's loggers; Tune's warnings about its disabled file loggers are noise here.
        for name in ("ray", "ray.tune", "ray.train"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    return True


class RayStart:
    """:func:`start_ray` in a background thread, so the invocation prepares its model and data
    meanwhile (the two are independent). :meth:`wait` returns what ``start_ray`` returned;
    :meth:`shutdown` shuts down what it started (also for an invocation that stops before its trials).

    The start is announced by :meth:`wait`, once the preparation is done: input found bad meanwhile
    is answered by its error line alone.

    The thread lives until :meth:`shutdown`: Ray's GCS and raylet are its children with a parent-death
    signal, which Linux sends when the *thread* that started them ends, not the process."""

    def __init__(self, address: str | None, debug: bool) -> None:
        self._what = joining(address)
        self._began = time.monotonic()
        self._seconds = 0.0
        self._started: bool | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._start, args=(address, debug), name="hpo-ray-start", daemon=True)
        self._thread.start()

    def _start(self, address: str | None, debug: bool) -> None:
        try:
            self._started = start_ray(address, debug, announce=False)
        except BaseException as error:  # noqa: BLE001 - raised again by wait(), in the invocation's thread
            self._error = error
        self._seconds = time.monotonic() - self._began
        self._ready.set()
        self._stopped.wait()

    def wait(self) -> bool:
        with phase(self._what) as waiting:
            self._ready.wait()
            if self._error is not None:
                raise self._error
            waiting.detail = f"{self._seconds:.0f}s in all, begun while the model and data were prepared"
        return bool(self._started)

    def shutdown(self) -> None:
        self._ready.wait()
        try:
            if self._started:
                import ray

                _skip_the_graceful_wait()
                ray.shutdown()
        finally:
            self._stopped.set()


def _skip_the_graceful_wait() -> None:
    """Make ``ray.shutdown`` stop the local Ray's processes at once. It sends each one SIGTERM and
    waits up to a second before SIGKILL; ours were started with SIGTERM blocked
    (:func:`_children_ignore_sigterm`), so every one of those waits ran out: seconds per invocation
    for the same SIGKILL. A Ray without that hook keeps its own shutdown."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not hasattr(node, "kill_all_processes"):
        return
    kill_all_processes = node.kill_all_processes

    def without_the_wait(*args, allow_graceful: bool = False, **kwargs):
        import psutil
        from ray._private.ray_constants import PROCESS_TYPE_RAYLET

        # The raylet's children (workers, its agents) end by themselves once it is gone: wait for them,
        # so that no process of this Ray outlives the invocation.
        children = [child for info in node.all_processes.get(PROCESS_TYPE_RAYLET, []) for child in _children(psutil, info.process.pid)]
        kill_all_processes(*args, allow_graceful=False, **kwargs)
        _, alive = psutil.wait_procs(children, timeout=5)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()

    node.kill_all_processes = without_the_wait


def _children(psutil, pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


@contextlib.contextmanager
def _children_ignore_sigterm():
    """Block SIGTERM while Ray starts its local processes; they inherit the blocked signal.

    A SIGTERM sent to the whole process group (systemd's default, ``kill -- -PGID``) would
    otherwise kill Ray's GCS and raylet under the driver, which then waits a minute for them and
    dies (exit 1) instead of stopping the sweep gracefully (exit 130). Ray already shields its
    processes from the group's SIGINT (Ctrl-C) this way; they still die with the driver.
    """
    if not hasattr(signal, "pthread_sigmask"):  # the mask is the calling thread's: the main one's or RayStart's
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _use_ray_auth_token_if_any() -> None:
    """Send this machine's Ray auth token (~/.ray/auth_token, RAY_AUTH_TOKEN) when joining by address.

    A cluster started with `ray start` requires the token when one exists, but Ray only turns
    token mode on by itself for ``address="auto"``; a cluster without auth accepts it too.
    An explicit ``RAY_AUTH_MODE`` is respected.
    """
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
