"""Bit streams: values packed into bits most significant first, and a bounded reader over them.

The position coders (``golomb``, ``enumerative``) build their streams from these helpers and
read them back through ``BitReader``, which refuses any read past the section it was given.
"""

from __future__ import annotations

import numpy as np

from fedticket.wire.errors import PayloadError

_FIELD_CHUNK = 1 << 16  # fixed-width fields gathered per batch: intermediates stay small


def bits_fixed(values: np.ndarray, width: int) -> np.ndarray:
    """Each value as ``width`` bits, most significant first (uint8 0/1 array)."""
    if width == 0 or len(values) == 0:
        return np.zeros(0, np.uint8)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    return ((values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.uint8).ravel()


def pack_fields(values: np.ndarray, widths: np.ndarray) -> bytes:
    """Fields of ``widths`` (0 to 64) bits each (bits of a value above its width are ignored),
    most significant bit first, back to back, as bytes (the last one padded with zero bits):
    built a 64-bit word at a time, not bit by bit. Each field
    is moved to the top of a word, then right to its offset; one that straddles two words
    leaves its low bits at the top of the next. A word's pieces are OR-ed by ``reduceat``."""
    widths = np.asarray(widths, np.int64)
    used = widths > 0
    values, widths = np.asarray(values, np.uint64)[used], widths[used]
    if len(widths) == 0:
        return b""
    ends = np.cumsum(widths)
    total = int(ends[-1])
    starts = ends - widths
    word, offset = starts >> 6, (starts & 63).astype(np.uint64)
    aligned = values << (64 - widths).astype(np.uint64)
    words = np.zeros((total + 63) // 64 + 1, np.uint64)
    first = np.flatnonzero(word[1:] != word[:-1]) + 1
    first = np.concatenate([[0], first])
    words[word[first]] = np.bitwise_or.reduceat(aligned >> offset, first)
    over = np.flatnonzero(ends > (word + 1) * 64)
    words[word[over] + 1] |= aligned[over] << (np.uint64(64) - offset[over])
    return words.astype(">u8").tobytes()[: (total + 7) // 8]


def gather_fields(padded: np.ndarray, starts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The big-endian bit fields at bit offsets ``starts`` of ``widths`` (0 to 64) bits, read
    from packed bytes ``padded`` (followed by at least 9 zero bytes), as uint64.

    Works on bytes, not on unpacked bits: memory is O(fields), whatever their widths."""
    first = starts >> 3
    offset = (starts & 7).astype(np.uint64)
    window = np.zeros(len(starts), np.uint64)
    for i in range(8):
        window = (window << np.uint64(8)) | padded[first + i]
    # shift the field to the top of the word, pulling the following byte's bits in below it
    window = (window << offset) | (padded[first + 8].astype(np.uint64) >> (np.uint64(8) - offset))
    shift = np.minimum(64 - widths, 63).astype(np.uint64)
    return np.where(widths > 0, window >> shift, np.uint64(0))


class BitReader:
    """Sequential view over a position section's bits, with bounds checks."""

    def __init__(self, section: bytes | memoryview, name: str) -> None:
        packed = np.frombuffer(section, np.uint8)
        self.bits = np.unpackbits(packed)
        self.padded = np.concatenate([packed, np.zeros(9, np.uint8)])
        self.pos = 0
        self.name = name

    @property
    def remaining(self) -> int:
        return len(self.bits) - self.pos

    def _need(self, count: int, what: str, at: int | None = None) -> None:
        at = self.pos if at is None else at
        if count < 0 or at + count > len(self.bits):
            raise PayloadError(f"tensor '{self.name}': position data ends inside the {what}")

    def take(self, count: int, what: str) -> np.ndarray:
        out = self.take_at(self.pos, count, what)
        self.pos += count
        return out

    def take_at(self, at: int, count: int, what: str) -> np.ndarray:
        """``count`` bits from bit ``at`` (the cursor stays)."""
        self._need(count, what, at)
        return self.bits[at : at + count]

    def fields_at(self, at: int, widths: np.ndarray, what: str) -> np.ndarray:
        """Consecutive fields of ``widths`` bits starting at bit ``at`` (the cursor stays)."""
        widths = widths.astype(np.int64, copy=False)
        ends = np.cumsum(widths)
        self._need(int(ends[-1]) if len(ends) else 0, what, at)
        return gather_fields(self.padded, at + ends - widths, widths)

    def fixed_at(self, at: int, count: int, width: int, what: str) -> np.ndarray:
        """``count`` fields of ``width`` bits from bit ``at`` (the cursor stays), as uint64: a
        pass per bit column, cheaper than gathering bytes for the narrow fields used here."""
        self._need(count * width, what, at)
        out = np.zeros(count, np.uint64)
        columns = self.bits[at : at + count * width].reshape(count, width)
        for j in range(width):
            out <<= np.uint64(1)
            out |= columns[:, j]
        return out

    def fixed(self, count: int, width: int, what: str) -> np.ndarray:
        """``count`` fields of ``width`` bits at the cursor, which moves past them."""
        self._need(count * width, what)
        out = np.empty(count, np.uint64)
        for first in range(0, count, _FIELD_CHUNK):
            last = min(count, first + _FIELD_CHUNK)
            out[first:last] = self.fixed_at(self.pos + width * first, last - first, width, what)
        self.pos += count * width
        return out

    def finish(self) -> None:
        if len(self.bits) - self.pos >= 8 or np.any(self.bits[self.pos :]):
            raise PayloadError(f"tensor '{self.name}': position data has trailing garbage")
