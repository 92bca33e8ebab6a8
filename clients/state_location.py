"""Where a client keeps its state snapshots: only where its own node config or its own
defaults allow, never where a server message says.

A deployed device takes messages from a server it may not control, so the server names a
snapshot *set* (``state-key``, 16 hex digits, unique to the run directory), never a path. The
client keeps the set under its node config's ``state-dir`` when the node's operator set one,
else under its own default root (``$FEDTICKET_STATE_HOME``, else
``$XDG_STATE_HOME/fedticket/client-state``, else ``~/.local/state/fedticket/client-state``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedticket.store.snapshots import ClientSnapshots


class StateLocationError(ValueError):
    """A node config ``state-dir`` that cannot name a directory."""


def default_state_root(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("FEDTICKET_STATE_HOME"):
        return Path(env["FEDTICKET_STATE_HOME"])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fedticket" / "client-state"


def state_root(node_config: Mapping[str, Any]) -> Path:
    """The node operator's ``state-dir``, else this client's default root."""
    configured = node_config.get("state-dir")
    if configured is None:
        return default_state_root()
    if not isinstance(configured, str) or not configured or not configured.isprintable():
        raise StateLocationError(
            f"node config state-dir={configured!r} must be a non-empty printable path"
        )
    return Path(configured).expanduser()


def snapshots_for(
    node_config: Mapping[str, Any], state_key: str | None, partition_id: int
) -> ClientSnapshots | None:
    """This client's snapshots for the run whose checked header (``Instructions``) named
    ``state_key`` (None: the server keeps client state in memory)."""
    if state_key is None:
        return None
    return ClientSnapshots(state_root(node_config) / state_key, partition_id)
