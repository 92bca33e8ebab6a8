"""Values: the kept entries of a tensor as bytes, in a wire dtype, optionally compressed.

float32 (bit-exact), float16 or bfloat16 (round to nearest even) on request; float64, int64
and int32 tensors travel in their own dtype. Values are optionally byte-plane shuffled and
compressed losslessly (zlib or lzma), and sent so only when that is smaller.

A buffer's value code holds the dtype in its low 4 bits and the compression in the high 4
(dtype 0: a mask, no values). Decoding refuses a claimed size that no stream of that many
bytes can inflate to (``MAX_EXPANSION``) before it decompresses or allocates anything, and
decompresses a piece at a time.
"""

from __future__ import annotations

import lzma
import zlib

import numpy as np

from fedticket.wire.errors import PayloadError

VALUE_DTYPES: dict[str, int] = {
    "float32": 1,
    "float16": 2,
    "bfloat16": 3,
    "float64": 4,
    "int64": 5,
    "int32": 6,
}
_DTYPE_NAMES = {code: name for name, code in VALUE_DTYPES.items()}
_WIRE_DTYPE = {
    "float32": "<f4",
    "float16": "<f2",
    "bfloat16": "<u2",
    "float64": "<f8",
    "int64": "<i8",
    "int32": "<i4",
}
_ITEMSIZE = {name: np.dtype(wire).itemsize for name, wire in _WIRE_DTYPE.items()}
_DECODED_DTYPE = {
    "float32": np.float32,
    "float16": np.float32,
    "bfloat16": np.float32,
    "float64": np.float64,
    "int64": np.int64,
    "int32": np.int32,
}
COMPRESSIONS: dict[str, int] = {"none": 0, "zlib": 1, "lzma": 2}
_COMPRESSION_NAMES = {code: name for name, code in COMPRESSIONS.items()}
# The most a compressed stream inflates, per byte of it: decoding checks a claimed size
# against it before it decompresses or allocates anything. Deflate codes a 258-byte match in
# no fewer than 2 bits (1032:1); the encoder's zlib reaches 1028.8:1 on 256 MB of zeros. xz
# (LZMA2, preset 6) reaches 6,851:1 on 256 MB of zeros (3,692:1 on 1 MB): an LZMA match of at
# most 273 bytes costs at least 14 binary decisions of at least 0.022 bits each (11-bit
# probabilities), about 7,090:1, so 10,000:1 leaves a margin.
MAX_EXPANSION = {"zlib": 1032, "lzma": 10_000}
LZMA_MEMLIMIT = 1 << 25  # preset 6 decodes with an 8 MiB dictionary; refuse streams needing more
_INFLATE_PIECE = 1 << 20  # bytes fed to and taken from a decompressor per call


def value_dtype_for(values: np.ndarray, requested: str) -> str:
    """The dtype ``values`` travel in: floats in ``requested`` (float64 stays float64 unless
    a half precision is asked for), integers in their own."""
    if np.issubdtype(values.dtype, np.floating):
        return "float64" if values.dtype == np.float64 and requested == "float32" else requested
    if values.dtype == np.int64 or values.dtype == np.int32:
        return str(values.dtype)
    raise TypeError(f"cannot encode values of dtype {values.dtype}")


def encode_values(kept: np.ndarray, dtype: str, compression: str) -> tuple[bytes, str]:
    """(the value section, the compression it used): compressed only when that is smaller."""
    raw = _values_to_bytes(kept, dtype)
    method = "none"
    if compression != "none" and raw:
        packed = _compress(raw, _ITEMSIZE[dtype], compression)
        if len(packed) < len(raw):
            raw, method = packed, compression
    return raw, method


def value_code(dtype: str, compression: str) -> int:
    """The header's value code byte (0 is a mask's)."""
    return VALUE_DTYPES[dtype] | (COMPRESSIONS[compression] << 4)


def read_value_code(code: int, value_bytes: int, count: int, name: str) -> tuple[str | None, str]:
    """(value dtype, None for a mask; compression) of a header's value code, checked against
    the ``value_bytes`` the buffer holds for ``count`` values."""
    dtype_code, compression_code = code & 0x0F, code >> 4
    if compression_code not in _COMPRESSION_NAMES:
        raise PayloadError(f"tensor '{name}': unknown value compression code {compression_code}")
    compression = _COMPRESSION_NAMES[compression_code]
    if dtype_code == 0:
        if value_bytes or compression != "none":
            raise PayloadError(
                f"tensor '{name}': mask buffer with {value_bytes} value bytes and "
                f"compression {compression} (a mask has neither)"
            )
        return None, compression
    if dtype_code not in _DTYPE_NAMES:
        raise PayloadError(f"tensor '{name}': unknown value dtype code {dtype_code}")
    dtype = _DTYPE_NAMES[dtype_code]
    _check_value_bytes(value_bytes, count * _ITEMSIZE[dtype], compression, name)
    return dtype, compression


def decoded_dtype(dtype: str) -> np.dtype:
    """The dtype values sent as ``dtype`` decode to (half precisions widen to float32)."""
    return np.dtype(_DECODED_DTYPE[dtype])


def _values_to_bytes(values: np.ndarray, dtype: str) -> bytes:
    if dtype == "bfloat16":
        bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
        rounded = (
            (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        ).astype(np.uint16)
        nan = np.isnan(values)
        rounded[nan] = (bits[nan] >> np.uint32(16)).astype(np.uint16) | np.uint16(0x0040)
        return rounded.astype(_WIRE_DTYPE["bfloat16"]).tobytes()
    return np.ascontiguousarray(values).astype(_WIRE_DTYPE[dtype]).tobytes()


def _compress(raw: bytes, itemsize: int, method: str) -> bytes:
    planes = np.frombuffer(raw, np.uint8).reshape(-1, itemsize).T.tobytes()  # byte-plane shuffle
    return zlib.compress(planes, 6) if method == "zlib" else lzma.compress(planes, preset=6)


class _Inflater:
    """A zlib or xz stream fed and drained a piece at a time: the memory beyond the output is
    O(piece), not O(stream)."""

    def __init__(self, data: memoryview, method: str) -> None:
        self.zlib = method == "zlib"
        if self.zlib:
            self.stream = zlib.decompressobj()
        else:
            self.stream = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=LZMA_MEMLIMIT)
        self.data, self.at, self.tail = data, 0, b""

    @property
    def eof(self) -> bool:
        return self.stream.eof

    def _feed(self) -> memoryview:
        chunk = self.data[self.at : self.at + _INFLATE_PIECE]
        self.at += len(chunk)
        return chunk

    def read(self, size: int) -> bytes | None:
        """At most ``size`` more bytes; None once the input is spent and nothing came out."""
        if self.zlib:  # zlib hands back what it could not take; lzma keeps it itself
            fed = False
            if not self.tail:
                self.tail = self._feed()
                fed = len(self.tail) > 0
            piece = self.stream.decompress(self.tail, size)
            self.tail = self.stream.unconsumed_tail
        else:
            chunk = self._feed() if self.stream.needs_input else b""
            fed = len(chunk) > 0
            piece = self.stream.decompress(chunk, size)
        return piece if piece or fed else None

    def trailing(self) -> int:
        """Input bytes after the end of the stream (once it ended, zlib's unconsumed tail is a
        copy of its unused data)."""
        return len(self.stream.unused_data) + len(self.data) - self.at


def _inflate_planes(
    data: memoryview, method: str, itemsize: int, count: int, name: str
) -> np.ndarray:
    """Decompress the byte planes straight into a (count, itemsize) array (the unshuffle needs
    no second copy), and insist that the stream ends exactly there."""
    out = np.empty((count, itemsize), np.uint8)
    inflater = _Inflater(data, method)
    expected = f"expected {itemsize * count}"
    try:
        for plane in range(itemsize):
            filled = 0
            while filled < count and not inflater.eof:
                piece = inflater.read(min(count - filled, _INFLATE_PIECE))
                if piece is None:
                    break
                out[filled : filled + len(piece), plane] = np.frombuffer(piece, np.uint8)
                filled += len(piece)
            if filled < count:
                raise PayloadError(
                    f"tensor '{name}': compressed values hold {plane * count + filled} bytes, "
                    f"{expected}"
                )
        while not inflater.eof:  # what is left must be the stream's end, without more output
            piece = inflater.read(1)
            if piece is None:
                break
            if piece:
                raise PayloadError(
                    f"tensor '{name}': compressed values hold more bytes, {expected}"
                )
    except (zlib.error, lzma.LZMAError, EOFError) as exc:
        raise PayloadError(f"tensor '{name}': compressed values are corrupt ({exc})") from None
    if not inflater.eof:
        raise PayloadError(f"tensor '{name}': compressed values are truncated (no stream end)")
    if inflater.trailing():
        raise PayloadError(
            f"tensor '{name}': {inflater.trailing()} bytes follow the compressed values"
        )
    return out


def decode_values(
    data: memoryview, dtype: str, count: int, compression: str, name: str, *, fresh: bool
) -> np.ndarray:
    """The ``count`` kept values in their decoded dtype; ``fresh``: in memory of their own
    (otherwise possibly a read-only view of ``data``)."""
    if compression == "none":
        wire = np.frombuffer(data, _WIRE_DTYPE[dtype], count)
    else:
        planes = _inflate_planes(data, compression, _ITEMSIZE[dtype], count, name)
        wire = planes.view(_WIRE_DTYPE[dtype]).reshape(count)
        fresh = False  # already ours
    if dtype == "bfloat16":
        widened = wire.astype(np.uint32)
        widened <<= np.uint32(16)
        return widened.view(np.float32)
    with np.errstate(invalid="ignore"):  # signalling NaNs widen quietly: values are not ours
        return wire.astype(_DECODED_DTYPE[dtype], copy=fresh)


def _check_value_bytes(value_bytes: int, raw: int, compression: str, name: str) -> None:
    """Value bytes against the ``raw`` bytes they stand for. The encoder compresses only when
    that saves bytes, and no stream inflates more than ``MAX_EXPANSION`` times its size: a
    claim is refused before anything is decompressed or allocated."""
    if compression == "none":
        if value_bytes != raw:
            raise PayloadError(
                f"tensor '{name}': {value_bytes} value bytes where the header's count needs {raw}"
            )
    elif not raw / MAX_EXPANSION[compression] <= value_bytes < raw:
        raise PayloadError(
            f"tensor '{name}': {value_bytes} bytes of {compression} data cannot hold the "
            f"{raw} value bytes the header claims (at most {MAX_EXPANSION[compression]}:1, "
            f"and only when smaller)"
        )
