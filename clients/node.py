"""What a client reads from its node config: the one boundary for values a device's operator
sets (``--node-config``), each checked with the fix named."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedticket.config import RunConfig


class NodeConfigError(ValueError):
    """The node was started without the node config a fedticket client needs."""


def partition_of(node_config: Mapping[str, Any]) -> tuple[int, int]:
    """(partition id, number of partitions) from the node config.

    Simulation sets both; a deployed SuperNode has them only when started with
    ``--node-config "partition-id=K num-partitions=N"``."""
    fix = 'start the SuperNode with --node-config "partition-id=K num-partitions=N" (0 <= K < N)'
    if "partition-id" not in node_config or "num-partitions" not in node_config:
        raise NodeConfigError(f"node config lacks partition-id / num-partitions; {fix}")
    pid, n = node_config["partition-id"], node_config["num-partitions"]
    if (
        not isinstance(pid, int)
        or not isinstance(n, int)
        or isinstance(pid, bool)
        or not 0 <= pid < n
    ):
        raise NodeConfigError(
            f"node config partition-id={pid!r} num-partitions={n!r} is invalid; {fix}"
        )
    return pid, n


def link_of(node_config: Mapping[str, Any], config: RunConfig) -> dict[str, float]:
    """The node's link model: node config keys override the run config's (a Pi on Wi-Fi and
    a Jetson on Ethernet in one federation)."""
    link = {}
    for key in ("link-up-mbps", "link-down-mbps", "link-latency-ms"):
        value = node_config.get(key, getattr(config, key.replace("-", "_")))
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise NodeConfigError(f"node config {key}={value!r} must be a number >= 0")
        link[key] = float(value)
    return link


def compute_slowdown_of(node_config: Mapping[str, Any]) -> dict[str, float]:
    """The node's ``compute-slowdown`` (how many times slower than the reference device it
    trains, e.g. measured with benchmarks/device.py), when its node config sets one; the
    server's time model (CELL's round deadline) uses it."""
    if "compute-slowdown" not in node_config:
        return {}
    value = node_config["compute-slowdown"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1e-3 <= value <= 1e4:
        raise NodeConfigError(
            f"node config compute-slowdown={value!r} must be a number from 0.001 to 10000"
        )
    return {"compute-slowdown": float(value)}


def broadcast_domain_of(node_config: Mapping[str, Any]) -> dict[str, str]:
    """The node's ``broadcast-domain`` (the cell or access point whose downlink broadcast it
    hears), when its node config names one; nodes without one share the default domain."""
    if "broadcast-domain" not in node_config:
        return {}
    value = node_config["broadcast-domain"]
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable():
        raise NodeConfigError(
            f"node config broadcast-domain={value!r} must be a printable name of 1 to 64 characters"
        )
    return {"broadcast-domain": value}


def with_node_data_dir(config: RunConfig, node_config: Mapping[str, Any]) -> RunConfig:
    """A device's ``--node-config "data-dir=..."`` overrides the run config's: each device
    keeps its dataset files where it likes."""
    data_dir = node_config.get("data-dir")
    if data_dir is None:
        return config
    if not isinstance(data_dir, str) or not data_dir:
        raise NodeConfigError(f"node config data-dir={data_dir!r} must be a non-empty path")
    return dataclasses.replace(config, data_dir=data_dir)


def data_cache_of(node_config: Mapping[str, Any]) -> Path | None:
    """The directory a device caches its client data in (``--node-config "data-cache=DIR"``),
    if it names one: a deployed ClientApp then skips loading and partitioning the data set
    in every message's process (``fedticket.learn.data.cache``)."""
    value = node_config.get("data-cache")
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 4096 or not value.isprintable():
        raise NodeConfigError(f"node config data-cache={value!r} must be a directory path")
    return Path(value).expanduser()
