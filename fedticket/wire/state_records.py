"""A client's slice of Flower's ``context.state`` as plain data and back: what the snapshot
store (``fedticket.store.snapshots``) writes to disk, without it touching Flower types.

A slice is every record whose key starts with the client's prefix: ConfigRecords become plain
dicts, ArrayRecords name -> array dicts in their order.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord


def state_slice(
    state: Mapping[str, Any], prefix: str
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """(config records, array records) of ``state`` whose keys start with ``prefix``."""
    configs: dict[str, dict[str, Any]] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for key, record in state.items():
        if not key.startswith(prefix):
            continue
        if isinstance(record, ConfigRecord):
            configs[key] = dict(record)
        elif isinstance(record, ArrayRecord):
            arrays[key] = {name: a.numpy() for name, a in record.items()}
    return configs, arrays


def drop_slice(state: MutableMapping[str, Any], prefix: str) -> None:
    """Remove every record of ``prefix`` from ``state``."""
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]


def config_record(values: dict[str, Any]) -> ConfigRecord:
    """A ConfigRecord of ``values``; ``ValueError`` (Flower's reason) for a value it cannot hold
    (None, an object, a mixed list)."""
    try:
        return ConfigRecord(values)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(str(exc).rstrip(".")) from None


def array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord of ``arrays`` in their order; ``ValueError`` for one Flower refuses."""
    try:
        return ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in arrays.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc).rstrip(".")) from None
