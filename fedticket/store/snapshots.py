"""Client state snapshots on disk (``client-state="disk"``), so a resumed run finds each client
as it was at the server's last checkpoint.

A client's state is its slice of ``context.state`` (``fedticket.<pid>.*``: counters, mask,
personal tensors). After every message it handles, the client writes that slice to
``<state-dir>/<pid>/r<round>.npz`` (atomically); before a message of round r it loads the newest
snapshot of an earlier round (train) or of round r at most (evaluate), so state written by a
round that never completed on the server is ignored. Snapshots older than the newest one at or
before the server's last checkpoint are deleted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from fedticket.store.checkpoints import (
    META,
    CheckpointError,
    describe,
    read_archive,
    require,
    require_key,
    write_archive,
)
from fedticket.wire.state_records import array_record, config_record, drop_slice, state_slice

#: Flower's ``context.state`` (a RecordDict), typed loosely: Flower types stay in ``wire``
State = MutableMapping[str, Any]

log = logging.getLogger("flwr")


class ClientStateError(RuntimeError):
    """A client's saved state cannot be read; the message names the client and the fix."""


_NAME = re.compile(r"r(\d+)\.npz$")


class ClientSnapshots:
    def __init__(self, directory: Path, partition_id: int) -> None:
        self.partition_id = partition_id
        self.directory = Path(directory) / str(partition_id)
        self.prefix = f"fedticket.{partition_id}."

    def _rounds(self) -> list[int]:
        if not self.directory.exists():
            return []
        return sorted(
            int(m.group(1)) for p in self.directory.iterdir() if (m := _NAME.match(p.name))
        )

    def _path(self, server_round: int) -> Path:
        return self.directory / f"r{server_round:06d}.npz"

    def load_into(self, state: State, before: int, rebuild: bool = False) -> int | None:
        """Replace this client's records in ``state`` by its newest snapshot of a round
        < ``before`` (none: the client starts empty). Returns that round.

        A damaged or foreign snapshot raises ``ClientStateError`` naming the file, the field
        and the fix; with ``rebuild`` it is logged and the client starts empty (None)."""
        drop_slice(state, self.prefix)
        earlier = [r for r in self._rounds() if r < before]
        if not earlier:
            return None
        path = self._path(earlier[-1])
        try:
            arrays, meta = read_archive(path)
        except CheckpointError as exc:
            return self._unusable(str(exc), rebuild)
        try:
            records = self._records(arrays, meta)
        except CheckpointError as exc:
            return self._unusable(f"{path}: {exc}", rebuild)
        for key, record in records.items():
            state[key] = record
        return earlier[-1]

    def _unusable(self, problem: str, rebuild: bool) -> None:
        if not rebuild:
            raise ClientStateError(
                f"client partition {self.partition_id}: state snapshot {problem}; delete it or "
                "set --run-config 'client-state-rebuild=true' to start this client fresh"
            )
        log.warning(
            "client partition %s: state snapshot %s; starting this client fresh "
            "(client-state-rebuild=true)",
            self.partition_id,
            problem,
        )

    def _records(self, arrays: dict[str, np.ndarray], meta: Any) -> dict[str, Any]:
        """The records ``save`` wrote, rebuilt; ``CheckpointError`` naming the first field
        that is not what ``save`` writes."""
        require(isinstance(meta, dict), META, f"is {describe(meta)}, not a JSON object")
        configs = require_key(meta, "configs")
        require(isinstance(configs, dict), "configs", f"is {describe(configs)}, not an object")
        order = require_key(meta, "order")
        require(isinstance(order, dict), "order", f"is {describe(order)}, not an object")
        listed = require_key(meta, "arrays")
        require(
            listed == sorted(order),
            "arrays",
            f"is {describe(listed)}, not the sorted record names of 'order' {sorted(order)}",
        )
        records: dict[str, Any] = {}
        for key, values in configs.items():
            self._require_own(key, "configs")
            records[key] = _config_record(key, values)
        named: set[str] = set()
        for key, names in order.items():
            self._require_own(key, "order")
            require(key not in configs, "order", f"names {key!r}, a record of 'configs' too")
            records[key] = _array_record(key, names, arrays)
            named |= {f"{key}//{name}" for name in names}
        foreign = sorted(set(arrays) - named)
        if foreign:
            raise CheckpointError(f"{foreign[0]!r} is an array that no record of 'order' names")
        return records

    def _require_own(self, key: str, where: str) -> None:
        require(
            key.startswith(self.prefix) and len(key) > len(self.prefix),
            where,
            f"names record {key!r}, not one of client partition {self.partition_id}'s "
            f"({self.prefix}<name>)",
        )

    def save(self, state: State, server_round: int, checkpoint_round: int) -> None:
        """Write this client's records as the snapshot of ``server_round``; drop snapshots a
        resume from ``checkpoint_round`` can no longer need."""
        configs, records = state_slice(state, self.prefix)
        order = {key: list(named) for key, named in records.items()}
        arrays = {
            f"{key}//{name}": a for key, named in records.items() for name, a in named.items()
        }
        meta = {"configs": configs, "arrays": sorted(order), "order": order}
        write_archive(self._path(server_round), arrays, meta)
        drop_slice(state, self.prefix)  # on disk now: memory stays flat in the client count
        rounds = self._rounds()
        kept = [r for r in rounds if r <= checkpoint_round]
        floor = kept[-1] if kept else -1
        for old in rounds:
            if old < floor:
                self._path(old).unlink(missing_ok=True)


def _config_record(key: str, values: Any) -> Any:
    """``configs[key]`` as a ConfigRecord; Flower's ``TypeError`` for a value it cannot hold
    (None, an object, a mixed list) becomes a ``CheckpointError`` naming the record."""
    require(
        isinstance(values, dict), "configs", f"record {key!r} is {describe(values)}, not an object"
    )
    try:
        return config_record(values)
    except ValueError as exc:
        raise CheckpointError(f"'configs' record {key!r}: {exc}") from None


def _array_record(key: str, names: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``order[key]``'s arrays, in that order, as an ArrayRecord."""
    require(
        isinstance(names, list)
        and all(isinstance(n, str) for n in names)
        and len(set(names)) == len(names),
        "order",
        f"record {key!r} is {describe(names)}, not a list of distinct array names",
    )
    for name in names:
        stored = arrays.get(f"{key}//{name}")
        require(stored is not None, "order", f"record {key!r} names {name!r}: not in the file")
        require(
            stored.dtype.kind in "biuf",
            f"{key}//{name}",
            f"has dtype {stored.dtype}, not a bool, int or float array",
        )
    try:
        return array_record({name: arrays[f"{key}//{name}"] for name in names})
    except ValueError as exc:
        raise CheckpointError(f"'order' record {key!r}: {exc}") from None
