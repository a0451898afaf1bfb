"""A trial's resource request must fit on one node of the cluster, or the sweep stops before any trial."""

from __future__ import annotations

import re

import pytest

from orchestrator.errors import ConfigError
from orchestrator.run.resources import GIB, check_some_node_fits, ray_request
from orchestrator.sweep.sweep_sections import Resources

HEAD = {"Alive": True, "Resources": {"CPU": 4.0, "memory": 16 * GIB}}
GPU_NODE = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0, "memory": 64 * GIB}}
DEAD_BIG_NODE = {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0, "memory": 512 * GIB}}
CLUSTER = [HEAD, GPU_NODE, GPU_NODE, DEAD_BIG_NODE]


@pytest.mark.parametrize("resources, asked, granted_by", [
    (Resources(cpu=4), {"cpu": 4.0, "gpu": 0.0}, [HEAD, GPU_NODE]),
    (Resources(cpu=2, gpu=0.5), {"cpu": 2.0, "gpu": 0.5}, [GPU_NODE]),
    (Resources(cpu=8, gpu=1, memory_gb=64), {"cpu": 8.0, "gpu": 1.0, "memory": 64 * GIB}, [GPU_NODE]),
    (Resources(cpu=6, gpu=0, memory_gb=32), {"cpu": 6.0, "gpu": 0.0, "memory": 32 * GIB}, [GPU_NODE]),
    (Resources(cpu=8, gpu=0.5, memory_gb=16), {"cpu": 8.0, "gpu": 0.5, "memory": 16 * GIB}, [GPU_NODE]),
])
def test_a_request_that_one_node_can_grant_passes(resources, asked, granted_by):
    """The request Ray gets passes where a node grants all of it, and only there (a dead node grants nothing)."""
    assert ray_request(resources) == asked
    check_some_node_fits(resources, CLUSTER)
    for node in granted_by:
        check_some_node_fits(resources, [node])
    without = [node for node in CLUSTER if not any(node is granting for granting in granted_by)]
    with pytest.raises(ConfigError, match=r"^resources(\.\w+)?: .* no (single )?node of the Ray cluster has"):
        check_some_node_fits(resources, without)


@pytest.mark.parametrize("resources, message", [
    (Resources(cpu=1, gpu=2), "resources.gpu: 2.0 is invalid: no node of the Ray cluster has that much (the largest has 1.0); ask for at most 1.0 per trial"),
    (Resources(cpu=16), "resources.cpu: 16.0 is invalid: no node of the Ray cluster has that much (the largest has 8.0)"),
    (Resources(memory_gb=100), "resources.memory_gb: '100 GiB' is invalid: no node of the Ray cluster has that much (the largest has 64 GiB)"),
])
def test_a_request_no_single_node_has_names_the_field_and_the_largest_node(resources, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check_some_node_fits(resources, CLUSTER)


def test_a_combination_no_node_has_at_once_is_refused_as_a_whole():
    cpu_heavy = {"Alive": True, "Resources": {"CPU": 32.0, "memory": 16 * GIB}}
    with pytest.raises(ConfigError, match=r"^resources: .* no single node of the Ray cluster has all of these at once"):
        check_some_node_fits(Resources(cpu=16, gpu=1), [cpu_heavy, GPU_NODE])


def test_memory_is_requested_from_ray_in_bytes():
    assert ray_request(Resources(cpu=2, gpu=0.25, memory_gb=1.5)) == {"cpu": 2, "gpu": 0.25, "memory": 1.5 * GIB}
    assert "memory" not in ray_request(Resources())
