"""Downlink broadcast accounting: one transmission of the global model that every receiver in
the broadcast domain hears, counted once per round and message kind (CELL: Seo et al., SPAWC
2021, arXiv 2104.12501; docs/algorithms/cell.md section 3).

Flower delivers a message per node, so each receiver's message still carries the model (on a
real deployment, Flower's transport moves one copy per node: the relay in the deployment test
sees them); the ledger counts what a broadcast channel would carry: per broadcast domain (the
receivers of one cell or access point: node config ``broadcast-domain``), one ``broadcast`` row
with the bytes of the model part (payload record and its header) of one message, priced on the
slowest downlink of its receivers (a broadcast must reach every one of them), and one
``unicast`` row per receiver with the bytes of its own part (its instruction header) and no
payload.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flwr.app import ArrayRecord, Message, RecordDict

from fedticket.wire.ledger import CommLedger
from fedticket.wire.protocol import ARRAYS, CONFIG, PAYLOAD
from fedticket.wire.records import message_bytes, payload_bytes, position_bytes

if TYPE_CHECKING:  # the exchange imports this module
    from fedticket.strategies.exchange import Sent
    from fedticket.strategies.nodes import NodeInfo


class NotABroadcast(ValueError):
    """The messages of one send carry different models: they cannot share one broadcast."""


def record_broadcast(
    ledger: CommLedger, server_round: int, kind: str, sent: Sequence[Sent]
) -> None:
    """Ledger rows for one downlink send as a broadcast: one per broadcast domain (node config
    ``broadcast-domain``; see the module docstring)."""
    with_model = [s for s in sent if isinstance(s.message.content.get(ARRAYS), ArrayRecord)]
    if with_model:
        first = with_model[0].message
        arrays, header = first.content[ARRAYS], first.content[PAYLOAD]
        for other in with_model[1:]:
            if other.message.content[PAYLOAD] != header or payload_bytes(
                other.message.content[ARRAYS]
            ) != payload_bytes(arrays):
                raise NotABroadcast(
                    f"round {server_round} {kind}: partition {other.partition_id} was sent a "
                    "different model from the others; a broadcast sends one"
                )
        size = message_bytes(_part(first, (ARRAYS, PAYLOAD)))
        domains: dict[str, list[NodeInfo]] = {}
        for s in with_model:
            if s.node is not None:
                domains.setdefault(s.node.broadcast_domain, []).append(s.node)
        for domain, receivers in sorted(domains.items()):
            ledger.record(
                round=server_round,
                node_id=0,
                partition_id=-1,
                direction="down",
                kind=kind,
                payload_bytes=payload_bytes(arrays),
                position_bytes=position_bytes(arrays, header),
                message_bytes=size,
                dense_bytes=with_model[0].dense,
                transfer_seconds=broadcast_seconds(receivers, size),
                channel="broadcast",
                domain=domain,
            )
    for s in sent:
        size = message_bytes(_part(s.message, (CONFIG,)))
        ledger.record(
            round=server_round,
            node_id=s.node_id,
            partition_id=s.partition_id,
            direction="down",
            kind=kind,
            payload_bytes=0,
            position_bytes=0,
            message_bytes=size,
            dense_bytes=0,
            transfer_seconds=s.node.transfer_seconds(size, "down") if s.node else math.nan,
        )


def broadcast_seconds(receivers: Sequence[NodeInfo], nbytes: int) -> float:
    """Time of one broadcast of ``nbytes``: the slowest receiver's downlink and its latency
    (NaN when a receiver has no link model: the time is unknown)."""
    if not receivers or any(node.link_down_mbps <= 0 for node in receivers):
        return math.nan
    slowest = min(node.link_down_mbps for node in receivers)
    latency = max(node.link_latency_ms for node in receivers)
    return latency / 1000 + nbytes * 8 / (slowest * 1e6)


def _part(message: Message, records: tuple[str, ...]) -> Message:
    """A message with only ``records`` of ``message``'s content (what one channel carries)."""
    content = RecordDict(
        {name: message.content[name] for name in records if name in message.content}
    )
    return Message(
        content,
        dst_node_id=message.metadata.dst_node_id,
        message_type=message.metadata.message_type,
        group_id=message.metadata.group_id,
    )


__all__ = ["NotABroadcast", "broadcast_seconds", "record_broadcast"]
