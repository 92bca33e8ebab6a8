"""The communication ledger: one row per message, counted from the bytes actually built.

Algorithms never count bytes; the strategy base records every message it sends and every reply
it receives, with sizes measured on the encoded payload and the serialized Flower message
(``fedticket.wire.records``). Totals, ratios vs dense and per-client cumulative bytes are queries on
this table, never separate counters.

Columns
-------
payload_bytes : bytes of the encoded tensor buffers in the message (what the codec produced).
message_bytes : bytes of the whole Flower message as its runtime serializes it (content-addressed
    objects: records, arrays, config, metadata); this is what Flower moves between processes,
    before gRPC/HTTP2/TLS framing, which only deployment measurements can see.
position_bytes : the part of payload_bytes that codes positions (masks); 0 when the receiver
    already held the mask.
dense_bytes : bytes the same tensors take as a dense fp32 state (what FedAvg sends); 0 for
    messages without tensors.
transfer_seconds : estimated time of message_bytes on the node's link model
    (latency + bytes / bandwidth); NaN when no link model is configured.
channel : "unicast" (one receiver) or "broadcast" (one transmission that every receiver in the
    broadcast domain hears, counted once: node_id 0, partition_id -1; CELL's downlink).
domain : a broadcast row's broadcast domain (node config ``broadcast-domain``; "" the default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas loads on first use: a ClientApp process never needs it
    import pandas as pd


DIRECTIONS = ("down", "up")
KINDS = ("query", "train", "evaluate")
CHANNELS = ("unicast", "broadcast")


@dataclass(frozen=True)
class CommRecord:
    round: int
    node_id: int
    partition_id: int  # -1 when the node never said which partition it holds
    direction: str
    kind: str
    payload_bytes: int
    position_bytes: int
    message_bytes: int
    dense_bytes: int
    transfer_seconds: float = math.nan
    channel: str = "unicast"
    domain: str = ""  # a broadcast row's broadcast domain ("": the default one)

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}, got {self.channel!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("payload_bytes", "position_bytes", "message_bytes", "dense_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


COLUMNS = [f.name for f in fields(CommRecord)]


class CommLedger:
    """Append-only list of ``CommRecord`` with table views."""

    def __init__(self) -> None:
        self._records: list[CommRecord] = []

    def record(self, **values: int | str) -> CommRecord:
        row = CommRecord(**values)  # type: ignore[arg-type]
        self._records.append(row)
        return row

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> tuple[CommRecord, ...]:
        return tuple(self._records)

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        # column by column: ``asdict`` deep-copies each row (60 us), and a run of 10,000
        # clients has 20,000 handshake rows before round 1, written again after every round
        frame = pd.DataFrame(
            {name: [getattr(r, name) for r in self._records] for name in COLUMNS},
            columns=COLUMNS,
        )
        return frame.astype(
            {
                "round": "int64",
                "node_id": "uint64",
                "partition_id": "int64",
                "payload_bytes": "int64",
                "message_bytes": "int64",
                "dense_bytes": "int64",
            }
        )

    def totals(self, *, round: int | None = None, direction: str | None = None) -> dict[str, int]:
        """Sum of each byte column over the rows that match."""
        rows = [
            r
            for r in self._records
            if (round is None or r.round == round)
            and (direction is None or r.direction == direction)
        ]
        columns = ("payload_bytes", "position_bytes", "message_bytes", "dense_bytes")
        return {c: sum(getattr(r, c) for r in rows) for c in columns}
