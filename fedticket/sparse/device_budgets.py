"""Device classes and their density budgets (hetero-FLASH).

A deployed SuperNode says what it is in its node config (``device-class="pi4"``); a simulated
node without one gets the paper's 3:3:4 mix of the levels 0.5, 0.75 and 1 by partition id, so
the same run config works in both runtimes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# share of the run's target density a device of each class trains
DEVICE_LEVELS: dict[str, float] = {"pi4": 0.5, "pi5": 0.75, "jetson": 1.0, "server": 1.0}
PAPER_MIX = (0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 1.0, 1.0, 1.0, 1.0)


class DeviceClassError(ValueError):
    """A node config names a device class that has no budget."""


def device_class(node_config: Mapping[str, Any]) -> str:
    """The node's declared device class ("simulated" when it declares none)."""
    device = node_config.get("device-class")
    if device is None:
        return "simulated"
    density_level(node_config, 0)  # validates the name
    return str(device)


def density_level(node_config: Mapping[str, Any], partition_id: int) -> float:
    """The node's budget as a share of the target density."""
    device = node_config.get("device-class")
    if device is None:
        return PAPER_MIX[partition_id % len(PAPER_MIX)]
    if device not in DEVICE_LEVELS:
        known = ", ".join(f"{k} ({v})" for k, v in DEVICE_LEVELS.items())
        raise DeviceClassError(
            f"node config device-class={device!r} is unknown; use one of: {known}"
        )
    return DEVICE_LEVELS[device]
