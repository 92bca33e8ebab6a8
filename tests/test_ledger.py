from __future__ import annotations

import numpy as np
import pytest

from fedticket.wire.ledger import COLUMNS, CommLedger


def test_ledger_rows_and_totals_by_round_and_direction() -> None:
    ledger = CommLedger()
    ledger.record(
        round=1,
        node_id=7,
        partition_id=0,
        direction="down",
        kind="train",
        payload_bytes=100,
        position_bytes=10,
        message_bytes=1100,
        dense_bytes=400,
    )
    ledger.record(
        round=1,
        node_id=7,
        partition_id=0,
        direction="up",
        kind="train",
        payload_bytes=50,
        position_bytes=0,
        message_bytes=1000,
        dense_bytes=400,
    )
    ledger.record(
        round=2,
        node_id=8,
        partition_id=1,
        direction="down",
        kind="evaluate",
        payload_bytes=10,
        position_bytes=0,
        message_bytes=900,
        dense_bytes=400,
    )
    assert ledger.totals(round=1) == {
        "payload_bytes": 150,
        "position_bytes": 10,
        "message_bytes": 2100,
        "dense_bytes": 800,
    }
    assert ledger.totals(direction="down")["message_bytes"] == 2000
    frame = ledger.to_frame()
    assert list(frame.columns) == COLUMNS and len(frame) == 3
    assert frame["payload_bytes"].sum() == 160


@pytest.mark.parametrize(
    ("field", "value"), [("direction", "sideways"), ("kind", "gossip"), ("payload_bytes", -1)]
)
def test_ledger_rejects_impossible_rows(field: str, value: object) -> None:
    row = dict(
        round=1,
        node_id=1,
        partition_id=0,
        direction="up",
        kind="train",
        payload_bytes=1,
        position_bytes=0,
        message_bytes=1,
        dense_bytes=1,
    )
    row[field] = value
    with pytest.raises(ValueError, match=field):
        CommLedger().record(**row)


def test_payload_and_message_bytes_are_measured_on_the_built_message(
    flower_task_identity: None,
) -> None:
    from flwr.app import Message, RecordDict
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    from fedticket.wire.records import dense_bytes, encode_payload, message_bytes, payload_bytes

    tensors = {"w": np.ones((20, 10), np.float32), "b": np.zeros(20, np.float32)}
    record, header = encode_payload(tensors)
    # codec header by hand: magic, version, scheme, dtype, ndim, dims, count, 0, 0, crc32
    w_header = 5 + 2 + 2 + 1 + 1 + 4  # dims 20, 10 (1 byte each), count 200 (2 bytes)
    b_header = 5 + 1 + 1 + 1 + 1 + 4
    assert payload_bytes(record) == w_header + 4 * 200 + b_header + 4 * 20
    assert dense_bytes(tensors) == 880
    message = Message(
        RecordDict({"arrays": record, "payload": header}), dst_node_id=3, message_type="train"
    )
    counted = message_bytes(message)
    objects = get_all_nested_objects(message).values()
    assert counted == sum(len(o.deflate()) for o in objects)
    assert payload_bytes(record) < counted < payload_bytes(record) + 2000
