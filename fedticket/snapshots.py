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
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedticket.checkpoint import CheckpointError, read_archive, write_archive

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

    def load_into(self, state: RecordDict, before: int, rebuild: bool = False) -> int | None:
        """Replace this client's records in ``state`` by its newest snapshot of a round
        < ``before`` (none: the client starts empty). Returns that round."""
        for key in [k for k in state if k.startswith(self.prefix)]:
            del state[key]
        earlier = [r for r in self._rounds() if r < before]
        if not earlier:
            return None
        path = self._path(earlier[-1])
        try:
            arrays, meta = read_archive(path)
        except CheckpointError as exc:
            if not rebuild:
                raise ClientStateError(
                    f"client partition {self.partition_id}: state snapshot {exc}; delete it or "
                    "set --run-config 'client-state-rebuild=true' to start this client fresh"
                ) from None
            log.warning(
                "client partition %s: state snapshot %s; starting this client fresh "
                "(client-state-rebuild=true)",
                self.partition_id,
                exc,
            )
            return None
        for key, values in meta["configs"].items():
            state[key] = ConfigRecord(values)
        for key in meta["arrays"]:
            head = f"{key}//"
            record = {n[len(head) :]: v for n, v in arrays.items() if n.startswith(head)}
            state[key] = ArrayRecord(
                {name: Array(np.ascontiguousarray(record[name])) for name in meta["order"][key]}
            )
        return earlier[-1]

    def save(self, state: RecordDict, server_round: int, checkpoint_round: int) -> None:
        """Write this client's records as the snapshot of ``server_round``; drop snapshots a
        resume from ``checkpoint_round`` can no longer need."""
        configs, arrays, order = {}, {}, {}
        for key, record in state.items():
            if not key.startswith(self.prefix):
                continue
            if isinstance(record, ConfigRecord):
                configs[key] = dict(record)
            elif isinstance(record, ArrayRecord):
                order[key] = list(record.keys())
                arrays |= {f"{key}//{name}": a.numpy() for name, a in record.items()}
        meta = {"configs": configs, "arrays": sorted(order), "order": order}
        write_archive(self._path(server_round), arrays, meta)
        for key in [k for k in state if k.startswith(self.prefix)]:
            del state[key]  # on disk now: the simulation's memory stays flat in the client count
        rounds = self._rounds()
        kept = [r for r in rounds if r <= checkpoint_round]
        floor = kept[-1] if kept else -1
        for old in rounds:
            if old < floor:
                self._path(old).unlink(missing_ok=True)
