"""Per-trial resources: what Ray is asked for, and the check that some node can ever grant it."""

from __future__ import annotations

from orchestrator.errors import ConfigError
from orchestrator.sweep.sweep_sections import Resources

GIB = 2**30
_NODE_NAMES = {"cpu": "CPU", "gpu": "GPU", "memory": "memory"}  # a trial's request -> a node's resources in ray.nodes()


def ray_request(resources: Resources) -> dict[str, float]:
    """The resource request of one trial, in Ray's names (memory in bytes)."""
    request = {"cpu": resources.cpu, "gpu": resources.gpu}
    if resources.memory_gb is not None:
        request["memory"] = resources.memory_gb * GIB
    return request


def check_some_node_fits(resources: Resources, nodes: list[dict]) -> None:
    """Raise :class:`ConfigError` when no alive node (``ray.nodes()``) has everything one trial asks for.

    Ray would otherwise leave such a trial PENDING for ever. Checked per node, not against the
    cluster's totals: two nodes with one GPU each cannot run a trial that asks for two.
    """
    wanted = {_NODE_NAMES[name]: amount for name, amount in ray_request(resources).items()}
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive", True)]
    if any(all(have.get(name, 0.0) >= amount for name, amount in wanted.items()) for have in alive):
        return
    largest = {name: max((have.get(name, 0.0) for have in alive), default=0.0) for name in wanted}
    field = {"CPU": "resources.cpu", "GPU": "resources.gpu", "memory": "resources.memory_gb"}
    for name, amount in wanted.items():
        if amount > largest[name]:
            most = _amount(name, largest[name])
            raise ConfigError(field[name], _amount(name, amount),
                              f"no node of the Ray cluster has that much (the largest has {most}); ask for at most {most} per trial")
    raise ConfigError("resources", {key: _amount(key, value) for key, value in wanted.items()},
                      "no single node of the Ray cluster has all of these at once; lower one of them or add a larger node")


def _amount(name: str, value: float) -> str | float:
    return f"{value / GIB:.3g} GiB" if name == "memory" else float(f"{value:g}")
