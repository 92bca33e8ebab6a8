"""Payload fuzz: one mutation of a codec buffer (bits, bytes, lengths, header varints, scheme,
dtype and ndim bytes), its crc32 recomputed (``reseal``) unless the kind is flip-raw."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from fedticket.wire import codec
from fedticket.wire.buffer import varint
from fedticket.wire.codec import Scheme

# mutations of one codec buffer (in a payload: of one tensor's buffer, its length updated);
# all but flip-raw recompute the buffer's checksum afterwards
BUFFER_KIND_NOTES = {
    "none": "the valid input itself",
    "flip": "one bit flipped",
    "flip-raw": "one bit flipped, checksum left stale",
    "byte": "one byte replaced",
    "insert": "1-8 random bytes inserted",
    "delete": "1-8 bytes deleted",
    "truncate": "cut short",
    "extend": "1-16 bytes appended",
    "splice": "the tail replaced by random bytes of another length",
    "fill": "everything after the header set to 00, FF, 55 or 80",
    "varint": "a header varint (dimension, count, position length, parameter) rewritten: edges, "
    "huge values, a dimension at the default limit, a huge one beside a zero",
    "scheme": "the scheme byte changed",
    "value-code": "the dtype/compression byte changed",
    "ndim": "the dimension count changed",
}
BUFFER_KINDS = tuple(BUFFER_KIND_NOTES)


def crc_offset(buf: bytes) -> int | None:
    """Where a buffer's crc32 sits, read from its header as the format lays it out (None if
    the header is too damaged to say)."""
    if len(buf) < 5 or buf[4] > codec.MAX_NDIM:
        return None
    pos = 5
    for _ in range(buf[4] + 3):  # the dimensions, count, position length, scheme parameter
        for _ in range(10):
            if pos >= len(buf):
                return None
            pos += 1
            if not buf[pos - 1] & 0x80:
                break
        else:
            return None
    pos += 4 if buf[2] == Scheme.KNOWN else 0  # the held-mask check
    return pos if pos + 4 <= len(buf) else None


def reseal(buf: bytes) -> bytes:
    """``buf`` with a correct crc32 (unchanged if its header cannot be read)."""
    at = crc_offset(buf)
    if at is None:
        return buf
    crc = zlib.crc32(buf[at + 4 :], zlib.crc32(buf[:at]))
    return buf[:at] + struct.pack("<I", crc) + buf[at + 4 :]


def _varint_fields(buf: bytes) -> list[tuple[int, int]]:
    """(start, end) of each header varint."""
    fields, pos = [], 5
    for _ in range(min(buf[4], codec.MAX_NDIM) + 3):
        start = pos
        while pos < len(buf) and buf[pos] & 0x80 and pos - start < 9:
            pos += 1
        pos += 1
        if pos > len(buf):
            break
        fields.append((start, pos))
    return fields


def _interesting_value(rng: np.random.Generator, values: list[int], j: int, ndim: int) -> int:
    """A new value for header varint ``j``: edges, huge ones, and hostile claims that still
    pass the entry limit (a dimension as large as the decoder's default limit allows with
    the others, or a huge one beside a zero dimension)."""
    old = values[j]
    choices = [0, 1, 2, 127, 128, old + 1, max(0, old - 1), 2 * old + 1, 2**31 - 1, 2**32]
    choices += [2**62, 2**64 - 1, 2**70 - 1, int(rng.integers(0, 2**40))]
    if j < ndim:
        others = [d for i, d in enumerate(values[:ndim]) if i != j]
        choices += [codec.DEFAULT_MAX_ENTRIES // max(1, int(np.prod([d for d in others if d])))] * 4
        if 0 in others:
            choices += [2**62] * 4
    return int(choices[int(rng.integers(len(choices)))])


def _rewrite_varints(buf: bytes, rng: np.random.Generator) -> bytes:
    """One header varint changed (and, a third of the time, the count made to fit the new
    shape: all, all but one, or half of the entries)."""
    fields = _varint_fields(buf)
    if not fields:
        return buf
    values = [_decode_varint(buf, start)[0] for start, _ in fields]
    ndim = min(buf[4], codec.MAX_NDIM)
    j = int(rng.integers(len(values)))
    values[j] = _interesting_value(rng, values, j, ndim)
    if j < ndim < len(values) and rng.random() < 0.35:
        n = int(np.prod(values[:ndim], dtype=object))
        values[ndim] = int(pick(rng, [n, max(0, n - 1), n // 2]))
    head = b"".join(varint(v) for v in values)
    return buf[:5] + head + buf[fields[-1][1] :]


def mutate_buffer(buf: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One mutation of ``kind``; resealed unless the kind is flip-raw (or none)."""
    out = bytearray(buf)
    size = len(out)
    at = int(rng.integers(0, size)) if size else 0
    noise = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    if kind == "none":
        return buf
    if kind in ("flip", "flip-raw") and size:
        out[at] ^= 1 << int(rng.integers(8))
    elif kind == "byte" and size:
        out[at] = int(rng.integers(256))
    elif kind == "insert":
        out[at:at] = noise[: int(rng.integers(1, 9))]
    elif kind == "delete":
        del out[at : at + int(rng.integers(1, 9))]
    elif kind == "truncate":
        del out[int(rng.integers(0, max(size, 1))) :]
    elif kind == "extend":
        out += noise if rng.random() < 0.5 else bytes(len(noise))
    elif kind == "splice":
        tail = int(rng.integers(0, 2 * (size - at) + 2))
        out[at:] = rng.integers(0, 256, tail, dtype=np.uint8).tobytes()
    elif kind == "fill":  # everything after the header: all zeros, all ones or a pattern
        start = (crc_offset(buf) or size) + 4
        byte = int(rng.choice([0x00, 0xFF, 0x55, 0x80]))
        out[start:] = bytes([byte]) * max(0, size - start)
    elif kind == "varint" and size > 5:
        out = bytearray(_rewrite_varints(buf, rng))
    elif kind == "scheme" and size > 2:
        out[2] = int(rng.integers(0, 8))
    elif kind == "value-code" and size > 3:
        out[3] = int(rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 0x11, 0x21, 0x31, 0x14, 0x26, 0xFF]))
    elif kind == "ndim" and size > 4:
        out[4] = int(rng.integers(0, codec.MAX_NDIM + 2))
    out = bytes(out)
    return out if kind == "flip-raw" else reseal(out)


def _decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(buf):
        value |= (buf[pos] & 0x7F) << shift
        shift += 7
        pos += 1
        if not buf[pos - 1] & 0x80:
            break
    return value, pos


def pick(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]
