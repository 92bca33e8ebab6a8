"""What the server knows of one node (partition, data counts, link, device), and its rows.

A node's partition id is its stable identity (node ids are random per run, and a restarted
SuperNode gets a new one); every client row names both. Shared by the roster that learns the
nodes and the exchange that messages them, so neither imports the other for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedticket.strategies.reporting import CLIENT_PROTOCOL_COLUMNS, ClientRow
from fedticket.wire.protocol import NUM_EXAMPLES

#: what a good reply's metrics add to its client row, by phase (metric keys spell the
#: columns with dashes)
REPLY_MEASURES = {
    "train": ("train_loss", "train_seconds", "client_seconds", "density"),
    "evaluate": (*CLIENT_PROTOCOL_COLUMNS, "density", "client_seconds"),
}


class NoClientsError(RuntimeError):
    """Too few healthy clients to run; the message says which and how to fix it."""


@dataclass(frozen=True)
class NodeInfo:
    node_id: int
    partition_id: int
    num_train: int
    num_test: int
    link_up_mbps: float = 0.0
    link_down_mbps: float = 0.0
    link_latency_ms: float = 0.0
    density_level: float = 1.0  # the node's budget as a share of the target density
    device_class: str = "simulated"
    num_partitions: int = 0
    compute_slowdown: float = 0.0  # node config's slowdown vs the reference device; 0: unknown
    broadcast_domain: str = ""  # the receivers that hear one broadcast ("": the default one)

    def transfer_seconds(self, nbytes: int, direction: str) -> float:
        """Estimated time on this node's link (NaN when no link model is set)."""
        mbps = self.link_down_mbps if direction == "down" else self.link_up_mbps
        if mbps <= 0:
            return math.nan
        return self.link_latency_ms / 1000 + nbytes * 8 / (mbps * 1e6)


def client_row(
    server_round: int,
    phase: str,
    node_id: int,
    partition_id: int,
    node: NodeInfo | None,
    status: str = "ok",
    reason: str = "",
    **measures: float | None,
) -> ClientRow:
    """A ``clients.parquet`` row; ``node`` None (a node that never passed the handshake) leaves
    its device class empty and its density level NaN."""
    return ClientRow(
        server_round,
        phase,
        node_id,
        partition_id,
        node.device_class if node else "",
        node.density_level if node else math.nan,
        status,
        reason,
        measures,
    )


def reply_row(
    server_round: int, phase: str, node: NodeInfo, metrics: Mapping[str, Any]
) -> ClientRow:
    """The row of node ``node``'s good reply in ``phase`` (train or evaluate)."""
    measures = {"num_examples": int(metrics.get(NUM_EXAMPLES, 0))} | {
        column: metrics.get(column.replace("_", "-")) for column in REPLY_MEASURES[phase]
    }
    return client_row(server_round, phase, node.node_id, node.partition_id, node, **measures)
