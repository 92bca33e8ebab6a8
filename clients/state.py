"""A client's state between messages: its slice of Flower's ``context.state``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from fedticket.sparse.masks import Masks
from fedticket.wire.records import record_to_state, state_to_record


class ClientState:
    """This client's slice of ``context.state``, keyed by partition id (node ids change
    every simulation run; partition ids do not)."""

    def __init__(self, state: RecordDict, partition_id: int) -> None:
        self._state = state
        self._prefix = f"fedticket.{partition_id}"

    def counters(self, name: str = "counters") -> dict[str, int | float | str]:
        """A record of scalars (``counters``: the algorithm's; ``protocols``: the base's
        evaluation bookkeeping)."""
        record = self._state.get(f"{self._prefix}.{name}")
        return dict(record) if record is not None else {}

    def save_counters(
        self, counters: Mapping[str, int | float | str], name: str = "counters"
    ) -> None:
        self._state[f"{self._prefix}.{name}"] = ConfigRecord(dict(counters))

    def arrays(self, name: str) -> dict[str, np.ndarray] | None:
        record = self._state.get(f"{self._prefix}.{name}")
        return record_to_state(record) if record is not None else None

    def save_arrays(self, name: str, tensors: Mapping[str, np.ndarray] | None) -> None:
        key = f"{self._prefix}.{name}"
        if tensors is None:
            self._state.pop(key, None)
        else:
            self._state[key] = state_to_record(tensors)

    def masks(self) -> Masks | None:
        """The mask this client holds (what the server may leave out of its messages)."""
        return self.arrays("mask")

    def save_masks(self, masks: Masks | None) -> None:
        self.save_arrays("mask", masks)
