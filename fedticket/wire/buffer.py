"""The buffer around one tensor's positions and values: its header, written and parsed.

Layout (all integers little-endian or LEB128 varints)::

    magic 0xF7 | version | scheme | value code (dtype | compression << 4) | ndim
    | dims (varint each) | count (varint) | position bytes (varint) | scheme parameter (varint)
    | [KNOWN: crc32 of the receiver's mask bits, 4 B] | crc32 of everything else, 4 B
    | positions | values

Parsing checks every field before anything a header claims is allocated: the entry limit for
every dimension and for their product, the fewest and most position bits the scheme can need
(``positions.check_positions``), the most a compressed value stream can inflate
(``values.read_value_code``), and the checksum; it raises ``PayloadError`` naming the tensor and
the fault on any bad input.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from fedticket.wire.errors import PayloadError
from fedticket.wire.positions import Scheme, check_positions
from fedticket.wire.values import decoded_dtype, read_value_code

MAGIC = 0xF7
FORMAT_VERSION = 2  # 2: enumerative block ranks by halves (block_ranks), not colex
MAX_NDIM = 8
# The most entries a header may claim unless the caller says otherwise (payloads pass each
# tensor's own size). A decode allocates at most about 17 bytes per entry (float64 values
# decompressed, the dense float64 output, the mask; positions need less), so 2**23 entries
# keep any default decode under ~150 MB; the models here have at most ~100k entries a tensor.
DEFAULT_MAX_ENTRIES = 1 << 23
_MOST_ENTRIES = 1 << 48  # whatever a caller allows: keeps every bit field and sum in 64 bits
_PREFIX_BYTES = 5  # magic, version, scheme, value code, ndim


@dataclass(frozen=True)
class BufferInfo:
    """What a buffer's header says, and how its bytes split."""

    scheme: Scheme
    shape: tuple[int, ...]
    count: int
    value_dtype: str | None
    compression: str
    header_bytes: int
    position_bytes: int
    value_bytes: int
    param: int

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + self.position_bytes + self.value_bytes

    @property
    def decoded_dtype(self) -> np.dtype | None:
        """The dtype decoding yields (half-precision values widen to float32); None: a mask."""
        return None if self.value_dtype is None else decoded_dtype(self.value_dtype)


def varint(value: int) -> bytes:
    """``value`` (>= 0) as an LEB128 varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: memoryview, pos: int, what: str, name: str) -> tuple[int, int]:
    value, shift = 0, 0
    for i in range(10):
        if pos + i >= len(buf):
            raise PayloadError(f"tensor '{name}': buffer truncated inside the header ({what})")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise PayloadError(f"tensor '{name}': header field {what} is not a valid varint")


def mask_crc(mask: np.ndarray) -> int:
    """The KNOWN scheme's mask check: crc32 of the mask's packed bits."""
    return zlib.crc32(np.packbits(mask.reshape(-1)).tobytes())


def check_shape(shape: tuple[int, ...]) -> None:
    if len(shape) > MAX_NDIM:
        raise ValueError(f"tensors may have at most {MAX_NDIM} dimensions, got {len(shape)}")


# ---------------------------------------------------------------------------- writing
def pack_header(
    scheme: Scheme, value_code: int, shape: tuple[int, ...], count: int, pos_len: int, param: int
) -> bytes:
    """The header up to (not including) the KNOWN mask check and the checksum."""
    head = bytes([MAGIC, FORMAT_VERSION, int(scheme), value_code, len(shape)])
    return (
        head + b"".join(varint(d) for d in shape) + varint(count) + varint(pos_len) + varint(param)
    )


def assemble(header: bytes, extra: bytes, body: bytes) -> bytes:
    """The buffer: ``header``, ``extra`` (the KNOWN mask check or nothing), the checksum of
    all the rest, then ``body`` (positions and values)."""
    crc = zlib.crc32(body, zlib.crc32(header + extra))
    return header + extra + struct.pack("<I", crc) + body


# ---------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class _Fields:
    """A header's fields as read, before they are checked against each other."""

    scheme: Scheme
    value_code: int
    shape: tuple[int, ...]
    count: int
    pos_len: int
    param: int
    end: int  # offset just past the last varint


def parse(
    buf: bytes | bytearray | memoryview,
    name: str,
    max_entries: int,
    expected_shape: tuple[int, ...] | None = None,
    *,
    verify: bool = True,
) -> tuple[BufferInfo, memoryview, int]:
    """(what the header says, a view of the body after it, the KNOWN mask check): every field
    checked against the others, the buffer's length and the limits before anything is
    allocated. Reads ``buf`` through a view: nothing of it is copied."""
    view = _byte_view(buf, name)
    max_entries = min(max_entries, _MOST_ENTRIES)
    fields = _read_fields(view, name, max_entries)
    _check_entries(fields, name, max_entries, expected_shape)
    known_crc, body_start = _read_checks(view, fields, name, verify)
    if fields.pos_len > len(view) - body_start:
        raise PayloadError(
            f"tensor '{name}': header claims {fields.pos_len} position bytes, buffer holds fewer"
        )
    check_positions(fields.scheme, fields.shape, fields.count, fields.pos_len, fields.param, name)
    value_bytes = len(view) - body_start - fields.pos_len
    value_dtype, compression = read_value_code(fields.value_code, value_bytes, fields.count, name)
    info = BufferInfo(
        fields.scheme,
        fields.shape,
        fields.count,
        value_dtype,
        compression,
        body_start,
        fields.pos_len,
        value_bytes,
        fields.param,
    )
    return info, view[body_start:], known_crc


def _byte_view(buf: object, name: str) -> memoryview:
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise PayloadError(f"tensor '{name}': expected bytes, got {type(buf).__name__}")
    try:
        return memoryview(buf).cast("B")
    except (TypeError, ValueError):
        raise PayloadError(f"tensor '{name}': expected a contiguous byte buffer") from None


def _read_prefix(view: memoryview, name: str) -> tuple[Scheme, int, int]:
    """(scheme, value code, ndim) from the fixed bytes that open every buffer."""
    if len(view) < _PREFIX_BYTES:
        raise PayloadError(
            f"tensor '{name}': buffer of {len(view)} bytes is too short for a header"
        )
    if view[0] != MAGIC:
        raise PayloadError(f"tensor '{name}': not a fedticket payload (bad magic byte)")
    if view[1] != FORMAT_VERSION:
        raise PayloadError(
            f"tensor '{name}': format version {view[1]}, this decoder reads {FORMAT_VERSION}"
        )
    try:
        scheme = Scheme(view[2])
    except ValueError:
        raise PayloadError(f"tensor '{name}': unknown position scheme {view[2]}") from None
    value_code, ndim = view[3], view[4]
    if ndim > MAX_NDIM:
        raise PayloadError(f"tensor '{name}': header claims {ndim} dimensions (at most {MAX_NDIM})")
    return scheme, value_code, ndim


def _read_fields(view: memoryview, name: str, max_entries: int) -> _Fields:
    scheme, value_code, ndim = _read_prefix(view, name)
    pos = _PREFIX_BYTES
    shape = []
    for i in range(ndim):
        dim, pos = _read_varint(view, pos, f"dimension {i}", name)
        if dim > max_entries:  # a zero elsewhere would hide it from the product
            raise PayloadError(
                f"tensor '{name}': header claims dimension {i} of {dim}, more than the limit "
                f"{max_entries} entries"
            )
        shape.append(dim)
    count, pos = _read_varint(view, pos, "count", name)
    pos_len, pos = _read_varint(view, pos, "position length", name)
    param, pos = _read_varint(view, pos, "scheme parameter", name)
    return _Fields(scheme, value_code, tuple(shape), count, pos_len, param, pos)


def _check_entries(
    fields: _Fields, name: str, max_entries: int, expected_shape: tuple[int, ...] | None
) -> None:
    """The shape within the limit (and the expected one, if any), the count within the shape."""
    shape = fields.shape
    n = math.prod(shape)
    if n > max_entries or math.prod(d for d in shape if d) > max_entries:
        raise PayloadError(
            f"tensor '{name}': header claims {n} entries (shape {shape}), more than the "
            f"limit {max_entries}"
        )
    if expected_shape is not None and shape != tuple(expected_shape):
        raise PayloadError(
            f"tensor '{name}': shape {shape} differs from the expected {tuple(expected_shape)}"
        )
    if fields.count > n:
        raise PayloadError(f"tensor '{name}': header keeps {fields.count} of {n} entries")


def _read_checks(view: memoryview, fields: _Fields, name: str, verify: bool) -> tuple[int, int]:
    """(the KNOWN mask check or 0, where the body starts); ``verify``: the checksum too."""
    pos, known_crc = fields.end, 0
    if fields.scheme == Scheme.KNOWN:
        if len(view) < pos + 4:
            raise PayloadError(f"tensor '{name}': buffer truncated inside the header (mask check)")
        (known_crc,) = struct.unpack_from("<I", view, pos)
        pos += 4
    if len(view) < pos + 4:
        raise PayloadError(f"tensor '{name}': buffer truncated inside the header (checksum)")
    (crc,) = struct.unpack_from("<I", view, pos)
    body_start = pos + 4
    if verify and zlib.crc32(view[body_start:], zlib.crc32(view[:pos])) != crc:
        raise PayloadError(f"tensor '{name}': checksum mismatch (buffer corrupted or truncated)")
    return known_crc, body_start
