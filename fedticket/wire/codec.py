"""The sparse payload codec's public API: a tensor = its positions (the mask) + its kept values,
near entropy, in one self-describing buffer.

Positions are coded per tensor with whichever scheme is smallest for that mask (``positions``:
bitmap, Golomb gaps, enumerative 64-blocks, per-row enumerative; a mask the receiver holds
costs 0 position bytes and a 4-byte check); values as float32 (bit-exact), float16 or bfloat16,
optionally compressed losslessly (``values``); the header is ``buffer``'s.

Decoding checks every field before it allocates anything a header claims, verifies the
checksum, insists that every stream ends where the buffer does, and raises ``PayloadError``
naming the tensor and the fault on any bad input. Its work and memory are O(buffer size +
entries), about 17 bytes an entry at most.
"""

from __future__ import annotations

import struct

import numpy as np

from fedticket.wire.buffer import (
    DEFAULT_MAX_ENTRIES,
    FORMAT_VERSION,
    MAX_NDIM,
    BufferInfo,
    assemble,
    check_shape,
    mask_crc,
    pack_header,
    parse,
)
from fedticket.wire.errors import PayloadError
from fedticket.wire.positions import (
    Choice,
    Scheme,
    choose,
    decode_positions,
    encode_positions,
    entropy_bound_bits,
    position_candidates,
    row_entropy_bound_bits,
)
from fedticket.wire.values import (
    COMPRESSIONS,
    VALUE_DTYPES,
    decode_values,
    encode_values,
    value_code,
    value_dtype_for,
)

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_MAX_ENTRIES",
    "FORMAT_VERSION",
    "MAX_NDIM",
    "VALUE_DTYPES",
    "BufferInfo",
    "PayloadError",
    "Scheme",
    "decode_mask",
    "decode_tensor",
    "encode_mask",
    "encode_tensor",
    "entropy_bound_bits",
    "inspect",
    "position_candidates",
    "row_entropy_bound_bits",
]


def encode_mask(mask: np.ndarray) -> bytes:
    """Positions only: the smallest scheme for this mask."""
    mask = np.asarray(mask, bool)
    check_shape(mask.shape)
    choice = choose(mask)
    positions = encode_positions(mask, choice)
    header = pack_header(
        choice.scheme, 0, mask.shape, np.count_nonzero(mask), len(positions), choice.param
    )
    return assemble(header, b"", positions)


def decode_mask(
    buf: bytes | bytearray | memoryview,
    *,
    name: str = "mask",
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> np.ndarray:
    """The mask in a buffer from ``encode_mask`` (or the positions of one from
    ``encode_tensor``); ``max_entries`` bounds what the header may claim."""
    info, body, _ = parse(buf, name, max_entries)
    if info.scheme == Scheme.KNOWN:
        raise PayloadError(f"tensor '{name}': buffer does not carry positions (sent as known)")
    return _positions(body, info, name).reshape(info.shape)


def encode_tensor(
    values: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    send_mask: bool = True,
    value_dtype: str = "float32",
    compression: str = "none",
) -> bytes:
    """Encode the kept entries of ``values`` (all of them when ``mask`` is None).

    ``send_mask=False`` leaves the positions out (the receiver holds the mask; a 4-byte mask
    checksum lets it verify that). ``value_dtype`` applies to floating tensors (float32 is
    bit-exact); integer tensors travel in their own dtype. ``compression`` ("zlib", "lzma")
    is used only when it makes the values smaller.
    """
    values = np.asarray(values)
    check_shape(values.shape)
    if value_dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"value_dtype must be float32, float16 or bfloat16, got {value_dtype!r}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
    dtype = value_dtype_for(values, value_dtype)
    if mask is None:
        mask_arr = None
        kept = values.reshape(-1)
        choice = Choice(Scheme.FULL, 0)
    else:
        mask_arr = np.asarray(mask, bool)
        if mask_arr.shape != values.shape:
            raise ValueError(
                f"mask shape {mask_arr.shape} differs from values shape {values.shape}"
            )
        kept_at = np.flatnonzero(mask_arr)
        kept = values.reshape(-1)[kept_at]  # an index gather: several times a bool one's speed
        choice = choose(mask_arr, kept_at) if send_mask else Choice(Scheme.KNOWN, 0)
    raw, method = encode_values(kept, dtype, compression)
    positions = encode_positions(mask_arr, choice) if mask_arr is not None else b""
    header = pack_header(
        choice.scheme,
        value_code(dtype, method),
        values.shape,
        len(kept),
        len(positions),
        choice.param,
    )
    extra = struct.pack("<I", mask_crc(mask_arr)) if choice.scheme == Scheme.KNOWN else b""
    return assemble(header, extra, positions + raw)


def decode_tensor(
    buf: bytes | bytearray | memoryview,
    mask: np.ndarray | None = None,
    *,
    name: str = "tensor",
    expected_shape: tuple[int, ...] | None = None,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> tuple[np.ndarray, np.ndarray]:
    """(dense values with zeros outside the mask, the mask). ``mask`` is required when the
    buffer was encoded with ``send_mask=False``; ``expected_shape`` rejects a wrong-shaped
    tensor before anything is allocated; ``max_entries`` bounds what the header may claim
    (a decode allocates about 17 bytes per entry at most: see ``DEFAULT_MAX_ENTRIES``)."""
    info, body, known_crc = parse(buf, name, max_entries, expected_shape)
    if info.value_dtype is None:
        raise PayloadError(f"tensor '{name}': buffer holds a mask, not values")
    held = None
    if info.scheme == Scheme.KNOWN:
        if mask is None:
            raise PayloadError(
                f"tensor '{name}': positions were not sent; pass the mask the receiver holds"
            )
        held = np.asarray(mask, bool)
        if (
            held.shape != info.shape
            or int(np.count_nonzero(held)) != info.count
            or mask_crc(held) != known_crc
        ):
            raise PayloadError(
                f"tensor '{name}': the held mask is not the one the sender used (stale mask)"
            )
    # values first: they are the cheap part to check, and a dense tensor needs no positions
    kept = _values(body, info, name, fresh=info.scheme == Scheme.FULL)
    if info.scheme == Scheme.FULL:
        return kept.reshape(info.shape), np.ones(info.shape, bool)
    flat_mask = held.reshape(-1) if held is not None else _positions(body, info, name)
    dense = np.zeros(flat_mask.size, kept.dtype)
    if not kept.flags.aligned:  # a view of the buffer at an odd offset: copied, scatters faster
        kept = kept.copy()
    dense[np.flatnonzero(flat_mask)] = kept  # an index scatter: several times a bool one's speed
    return dense.reshape(info.shape), flat_mask.reshape(info.shape)


def inspect(
    buf: bytes | bytearray | memoryview,
    *,
    name: str = "tensor",
    max_entries: int = DEFAULT_MAX_ENTRIES,
    verify: bool = True,
) -> BufferInfo:
    """Parse a buffer's header without decoding it; ``verify`` also checks the checksum."""
    return parse(buf, name, max_entries, verify=verify)[0]


def _positions(body: memoryview, info: BufferInfo, name: str) -> np.ndarray:
    section = body[: info.position_bytes]
    return decode_positions(section, info.scheme, info.shape, info.count, info.param, name)


def _values(body: memoryview, info: BufferInfo, name: str, *, fresh: bool) -> np.ndarray:
    assert info.value_dtype is not None
    section = body[info.position_bytes :]
    return decode_values(section, info.value_dtype, info.count, info.compression, name, fresh=fresh)
