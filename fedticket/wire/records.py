"""The one place that turns fedticket payloads into Flower records and measures messages (the
wire package's only module that imports ``flwr``).

A payload is one codec buffer per tensor (``fedticket.wire.codec``), concatenated into a single
raw uint8 ``Array`` (exactly the codec's bytes: no .npy header, no pickle; one Array instead of
one per tensor saves Flower's ~300 B object overhead per tensor), plus a ``ConfigRecord``
header: codec version, tensor names and buffer lengths, which tensors are masked, the mask
digest and whether the positions were sent (a mask the receiver already holds is not).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    no_object_id_recompute,
)

from fedticket.sparse.masks import mask_digest
from fedticket.wire import codec
from fedticket.wire.codec import PayloadError

__all__ = ["Payload", "PayloadError", "decode_payload", "encode_payload", "message_bytes"]

PAYLOAD_KEY = "payload"
HEADER_KEYS = ("codec-version", "tensors", "lengths", "masked", "mask-digest", "masks-sent")


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


@dataclass(frozen=True)
class _Header:
    names: list[str]
    lengths: list[int]
    masked: list[str]
    digest: str
    masks_sent: bool


def _shown(value: object) -> str:
    """A header value for an error message, cut short (a hostile list can be long)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(header: Mapping, key: str) -> list[str]:
    names = header[key]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PayloadError(
            f"payload header '{key}' must be a list of tensor names, got {_shown(names)}"
        )
    if len(set(names)) != len(names):
        twice = sorted(n for n, times in Counter(names).items() if times > 1)
        raise PayloadError(f"payload header '{key}' names {twice[:5]} more than once")
    return names


def _read_header(header: object) -> _Header:
    """The header's fields, each of the type ``encode_payload`` writes."""
    if not isinstance(header, Mapping):
        raise PayloadError(f"payload header must be a ConfigRecord, got {type(header).__name__}")
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise PayloadError(f"payload header lacks {missing} (was it written by encode_payload?)")
    version = header["codec-version"]
    if not _is_int(version) or version != codec.FORMAT_VERSION:
        raise PayloadError(
            f"payload codec version {_shown(version)}, this side reads {codec.FORMAT_VERSION}"
        )
    names, masked = _names(header, "tensors"), _names(header, "masked")
    lengths = header["lengths"]
    if not isinstance(lengths, list) or not all(_is_int(n) and n >= 0 for n in lengths):
        raise PayloadError(
            f"payload header 'lengths' must be byte counts (ints >= 0): {_shown(lengths)}"
        )
    if len(lengths) != len(names):
        raise PayloadError(
            f"payload header lists {len(names)} tensors but {len(lengths)} buffer lengths"
        )
    digest, masks_sent = header["mask-digest"], header["masks-sent"]
    if not isinstance(digest, str):
        raise PayloadError(f"payload header 'mask-digest' must be a string, got {_shown(digest)}")
    if not isinstance(masks_sent, bool):
        raise PayloadError(
            f"payload header 'masks-sent' must be true or false, got {_shown(masks_sent)}"
        )
    return _Header(names, lengths, masked, digest, masks_sent)


def _payload_data(record: object) -> bytes:
    if not isinstance(record, ArrayRecord):
        raise PayloadError(f"payload must be an ArrayRecord, got {type(record).__name__}")
    if list(record.keys()) != [PAYLOAD_KEY]:
        raise PayloadError(
            f"payload record must hold one array '{PAYLOAD_KEY}', got {list(record.keys())}"
        )
    array = record[PAYLOAD_KEY]
    if array.stype != "raw" or array.dtype != "uint8":
        raise PayloadError(f"payload: expected a raw uint8 buffer, got {array.stype}/{array.dtype}")
    return array.data


def _contradiction(
    name: str, info: codec.BufferInfo, masked: bool, masks_sent: bool, dtype: np.dtype
) -> str | None:
    """What in a buffer's header contradicts the payload header or the model, if anything."""
    scheme = info.scheme.name
    if not masked and info.scheme != codec.Scheme.FULL:
        return (
            f"tensor '{name}' is not listed as masked, but its buffer is {scheme} "
            f"(a tensor without a mask travels dense)"
        )
    if masked and not masks_sent and info.scheme != codec.Scheme.KNOWN:
        return (
            f"tensor '{name}': the header says the masks were not sent, but its buffer codes "
            f"positions ({scheme})"
        )
    if masked and masks_sent and info.scheme == codec.Scheme.KNOWN:
        return (
            f"tensor '{name}': the header says the masks were sent, but its buffer leaves "
            f"the positions out"
        )
    decoded = info.decoded_dtype
    if decoded is None:
        return f"tensor '{name}': buffer holds a mask, not values"
    if decoded.kind != dtype.kind or (dtype.kind != "f" and decoded != dtype):
        return f"tensor '{name}': buffer holds {info.value_dtype} values, the model has {dtype}"
    return None


def needs_held_mask(header: Mapping[str, object]) -> bool:
    """Whether a payload left its masks' positions out (the receiver must hold them): what a
    receiver checks before decoding, to explain a "stale mask state" failure."""
    return not header.get("masks-sent", True) and bool(header.get("masked"))


def decode_payload(
    record: ArrayRecord,
    header: ConfigRecord,
    template: Mapping[str, np.ndarray],
    held_masks: Mapping[str, np.ndarray] | None = None,
) -> Payload:
    """Decode and validate against ``template`` (names, shapes, dtypes). ``held_masks`` are
    the receiver's masks, needed when the positions were not sent.

    Raises ``PayloadError`` unless the header is the kind ``encode_payload`` writes and every
    buffer agrees with it: an unmasked tensor is dense (FULL); a masked one leaves its positions
    out exactly when the masks were not sent; the masks decoded (or held) have the header's
    digest; no tensor claims more entries than the model's, or another kind of dtype."""
    head = _read_header(header)
    if set(head.names) != set(template):
        missing = sorted(set(template) - set(head.names))
        extra = sorted(set(head.names) - set(template))
        raise PayloadError(
            f"payload tensors differ from the model: missing {_shown(missing)}, "
            f"unexpected {_shown(extra)}"
        )
    masked = set(head.masked)
    if not masked <= set(template):
        raise PayloadError(
            f"payload masks tensors the model lacks: {_shown(sorted(masked - set(template)))}"
        )
    if head.masks_sent and not masked:
        raise PayloadError("payload header says masks were sent, but it masks no tensor")
    held: dict[str, np.ndarray] = {}
    if masked and not head.masks_sent:  # the receiver's masks stand in for the positions
        available = held_masks or {}
        lacking = sorted(masked - set(available))
        if lacking:
            raise PayloadError(
                f"positions of {lacking} not sent and this side holds no mask for them "
                f"(stale mask state)"
            )
        held = {name: available[name] for name in masked}
        if mask_digest(held) != head.digest:
            raise PayloadError(
                f"positions not sent and the held masks are not {_shown(head.digest)} "
                f"(stale mask state)"
            )
    data = _payload_data(record)
    if sum(head.lengths) != len(data):
        raise PayloadError(f"payload holds {len(data)} bytes, its header lists {sum(head.lengths)}")
    tensors: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    view, offset = memoryview(data), 0
    for name, length in zip(head.names, head.lengths, strict=True):
        expected = template[name]
        buffer, offset = view[offset : offset + length], offset + length
        # no more entries than the model's tensor (a zero dimension hides none of the others)
        limit = math.prod(d for d in expected.shape if d)
        try:
            info = codec.inspect(buffer, name=name, max_entries=limit, verify=False)
            problem = _contradiction(name, info, name in masked, head.masks_sent, expected.dtype)
        except PayloadError as exc:
            problem = str(exc)
        if problem is not None:
            codec.inspect(buffer, name=name, max_entries=limit)  # a corrupted buffer says so
            raise PayloadError(problem)
        dense, mask = codec.decode_tensor(
            buffer, held.get(name), name=name, expected_shape=expected.shape, max_entries=limit
        )
        with np.errstate(invalid="ignore"):  # a signalling NaN is the caller's to judge
            tensors[name] = dense.astype(expected.dtype, copy=False)
        if name in masked:
            masks[name] = mask
    if mask_digest(masks) != head.digest:  # every case: masks sent, held, or none at all
        raise PayloadError(
            f"decoded masks have digest {mask_digest(masks)!r}, the header says "
            f"{_shown(head.digest)}"
        )
    tensors = {name: tensors[name] for name in template}  # the model's order
    return Payload(tensors, masks or None, head.digest, head.masks_sent)


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
            # header only, nothing allocated: any size the model may have is fine here
            info = codec.inspect(data[offset : offset + length], verify=False, max_entries=2**40)
            total += info.position_bytes
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
