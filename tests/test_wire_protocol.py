"""The message protocol's instruction header: what the server writes, a client reads back
exactly; anything else is refused with the field named."""

from __future__ import annotations

import pytest

from fedticket.wire.protocol import Instructions, ProtocolError

KEY = "0123456789abcdef"


@pytest.mark.parametrize(
    "header",
    [
        Instructions(3, "lotteryfl"),
        Instructions(0, "flash", stage="sensitivity"),
        Instructions(7, "fedltn", KEY, 5),
    ],
)
def test_instructions_round_trip(header) -> None:
    assert Instructions.parse(header.to_dict()) == header


def test_the_header_the_server_sends_has_the_keys_it_always_had() -> None:
    assert Instructions(2, "fedavg", KEY, 1).to_dict() == {
        "server-round": 2,
        "algorithm": "fedavg",
        "state-key": KEY,
        "checkpoint-round": 1,
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"algorithm": "x"}, "lacks 'server-round'"),
        ({"server-round": 1}, "lacks 'algorithm'"),
        ({"server-round": -1, "algorithm": "x"}, "whole number"),
        ({"server-round": True, "algorithm": "x"}, "whole number"),
        ({"server-round": 1.0, "algorithm": "x"}, "whole number"),
        ({"server-round": 1, "algorithm": "x\x1b[31m"}, "printable"),
        ({"server-round": 1, "algorithm": "x", "stage": "s" * 101}, "printable"),
        ({"server-round": 1, "algorithm": "x", "state-key": "../etc"}, "16 hex digits"),
        ({"server-round": 1, "algorithm": "x", "checkpoint-round": "2"}, "whole number"),
        ({"server-round": 1, "algorithm": "x", "state-dir": "/etc"}, "unknown fields"),
    ],
)
def test_a_bad_header_is_refused_with_the_field_named(raw, message) -> None:
    with pytest.raises(ProtocolError, match=message):
        Instructions.parse(raw)


def test_a_receiver_can_tell_a_payload_that_needs_its_held_mask() -> None:
    import numpy as np

    from fedticket.wire.records import encode_payload, needs_held_mask

    tensors = {"w": np.ones((4, 4), np.float32)}
    masks = {"w": np.eye(4, dtype=bool)}
    assert not needs_held_mask(encode_payload(tensors, masks, send_masks=True)[1])
    assert needs_held_mask(encode_payload(tensors, masks, send_masks=False)[1])
    assert not needs_held_mask(encode_payload(tensors)[1])  # dense: nothing to hold
