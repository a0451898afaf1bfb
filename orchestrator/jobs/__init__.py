"""Sweeps as Ray jobs on a cluster: hpo submit, status, logs, stop and KubeRay's RayJob."""
