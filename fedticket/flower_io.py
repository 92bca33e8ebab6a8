"""The one place that turns fedticket payloads into Flower records and measures messages.

A payload is one codec buffer per tensor (``fedticket.codec``), concatenated into a single raw
uint8 ``Array`` (exactly the codec's bytes: no .npy header, no pickle; one Array instead of one
per tensor saves Flower's ~300 B object overhead per tensor), plus a ``ConfigRecord`` header:
codec version, tensor names and buffer lengths, which tensors are masked, the mask digest and
whether the positions were sent (a mask the receiver already holds is not).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    no_object_id_recompute,
)

from fedticket import codec
from fedticket.codec import PayloadError
from fedticket.masks import mask_digest

__all__ = ["Payload", "PayloadError", "decode_payload", "encode_payload", "message_bytes"]

PAYLOAD_KEY = "payload"


@dataclass(frozen=True)
class Payload:
    """Decoded tensors (dense, zeros outside the masks) and the masks that came with them."""

    tensors: dict[str, np.ndarray]
    masks: dict[str, np.ndarray] | None
    digest: str
    masks_sent: bool


def _raw(buffer: bytes) -> Array:
    return Array(dtype="uint8", shape=(len(buffer),), stype="raw", data=buffer)


def encode_payload(
    tensors: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray] | None = None,
    *,
    send_masks: bool = True,
    value_dtype: str = "float32",
    compression: str = "none",
) -> tuple[ArrayRecord, ConfigRecord]:
    """Encode ``tensors``; a tensor with a mask sends only its kept entries (and, when
    ``send_masks``, its positions)."""
    masks = dict(masks) if masks else {}
    unknown = set(masks) - set(tensors)
    if unknown:
        raise ValueError(f"masks for tensors not in the payload: {sorted(unknown)}")
    buffers = [
        codec.encode_tensor(
            values,
            masks.get(name),
            send_mask=send_masks,
            value_dtype=value_dtype,
            compression=compression,
        )
        for name, values in tensors.items()
    ]
    record = ArrayRecord({PAYLOAD_KEY: _raw(b"".join(buffers))})
    header = ConfigRecord(
        {
            "codec-version": codec.FORMAT_VERSION,
            "tensors": list(tensors),
            "lengths": [len(b) for b in buffers],
            "masked": sorted(masks),
            "mask-digest": mask_digest(masks),
            "masks-sent": bool(masks) and send_masks,
        }
    )
    return record, header


def decode_payload(
    record: ArrayRecord,
    header: ConfigRecord,
    template: Mapping[str, np.ndarray],
    held_masks: Mapping[str, np.ndarray] | None = None,
) -> Payload:
    """Decode and validate against ``template`` (names, shapes, dtypes). ``held_masks`` are
    the receiver's masks, needed when the positions were not sent."""
    try:
        version = int(header["codec-version"])
        names = [str(n) for n in header["tensors"]]
        lengths = [int(n) for n in header["lengths"]]
        masked = list(header["masked"]) if "masked" in header else []
        digest, masks_sent = str(header["mask-digest"]), bool(header["masks-sent"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError(f"payload header is incomplete or malformed ({exc})") from None
    if version != codec.FORMAT_VERSION:
        raise PayloadError(
            f"payload codec version {version}, this side reads {codec.FORMAT_VERSION}"
        )
    if set(names) != set(template) or len(names) != len(template) or len(lengths) != len(names):
        missing, extra = sorted(set(template) - set(names)), sorted(set(names) - set(template))
        raise PayloadError(
            f"payload tensors differ from the model: missing {missing}, unexpected {extra}"
        )
    if not set(masked) <= set(template):
        raise PayloadError(
            f"payload masks tensors the model lacks: {sorted(set(masked) - set(template))}"
        )
    held = {k: held_masks[k] for k in masked if k in held_masks} if held_masks else {}
    if masked and not masks_sent and mask_digest(held) != digest:
        raise PayloadError(
            f"positions not sent and the held mask is not {digest} (stale mask state)"
        )
    if list(record.keys()) != [PAYLOAD_KEY]:
        raise PayloadError(
            f"payload record must hold one array '{PAYLOAD_KEY}', got {list(record.keys())}"
        )
    array = record[PAYLOAD_KEY]
    if array.stype != "raw" or array.dtype != "uint8":
        raise PayloadError(f"payload: expected a raw uint8 buffer, got {array.stype}/{array.dtype}")
    data = array.data
    if any(n < 0 for n in lengths) or sum(lengths) != len(data):
        raise PayloadError(f"payload holds {len(data)} bytes, its header lists {sum(lengths)}")
    tensors: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    offset = 0
    for name, length in zip(names, lengths, strict=True):
        expected = template[name]
        buffer, offset = data[offset : offset + length], offset + length
        known = held.get(name) if not masks_sent else None
        dense, mask = codec.decode_tensor(buffer, known, name=name, expected_shape=expected.shape)
        tensors[name] = dense.astype(expected.dtype, copy=False)
        if name in masked:
            masks[name] = mask
    tensors = {name: tensors[name] for name in template}  # the model's order
    if masks_sent and mask_digest(masks) != digest:
        raise PayloadError(f"decoded masks do not match the header digest {digest}")
    return Payload(tensors, masks or None, digest, masks_sent)


def payload_bytes(record: ArrayRecord | None) -> int:
    """Bytes of the encoded buffers: exactly what the codec produced."""
    return 0 if record is None else sum(len(array.data) for array in record.values())


def position_bytes(record: ArrayRecord | None, header: ConfigRecord | None) -> int:
    """The part of ``payload_bytes`` that codes positions (masks), as the buffer headers say;
    a buffer whose header cannot be read counts 0 (decoding reports it)."""
    if record is None or header is None or PAYLOAD_KEY not in record:
        return 0
    data, offset, total = record[PAYLOAD_KEY].data, 0, 0
    try:
        lengths = [int(n) for n in header["lengths"]]
    except (KeyError, TypeError, ValueError):
        return 0
    for length in lengths:
        with contextlib.suppress(PayloadError):
            total += codec.inspect(data[offset : offset + length], verify=False).position_bytes
        offset += length
    return total


def message_bytes(message: Message) -> int:
    """Bytes of the message as Flower 1.39 moves it: the sum of its content-addressed objects
    (Message, RecordDict, records, Arrays, chunks), each deflated; within about 1 % of the
    SuperLink's own traffic counters (see FLOWER-NOTES 2)."""
    # Flower's own pushes use this guard: without it every parent's deflate re-hashes its
    # children, about twice the work
    with no_object_id_recompute():
        return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())


def dense_bytes(tensors: Mapping[str, np.ndarray]) -> int:
    """Raw bytes of the tensors as a dense state: what FedAvg sends for them."""
    return int(sum(t.nbytes for t in tensors.values()))


def state_to_record(tensors: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Client-side state (not sent over the network): plain numpy arrays."""
    return ArrayRecord({name: Array(np.ascontiguousarray(t)) for name, t in tensors.items()})


def record_to_state(
    record: ArrayRecord, template: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """The record's arrays; with ``template``, reshaped to its shapes (Flower's strategy loop
    hands 0-d tensors such as BatchNorm's ``num_batches_tracked`` back with shape (1,))."""
    state = {name: array.numpy() for name, array in record.items()}
    if template is not None:
        state = {
            name: t.reshape(template[name].shape)
            if name in template and t.size == template[name].size
            else t
            for name, t in state.items()
        }
    return state
