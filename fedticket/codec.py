"""Sparse payload codec: a tensor = its positions (the mask) + its kept values, near entropy.

Positions are coded per tensor with whichever scheme is smallest for that mask:

* ``BITMAP``: 1 bit per entry (best near d = 0.5).
* ``GOLOMB``: Golomb-coded gaps between kept entries (or between pruned entries when d > 0.5),
  with the parameter M searched per tensor; within 1 % of n*H(d) except near d = 0.38.
* ``ENUM``: enumerative coding of 64-entry blocks: a canonical Huffman code for each block's count
  (built on both sides from Binomial(64, d), so no table is sent) plus the block's rank among all
  patterns with that count, in truncated binary. Within 0.5 % of n*H(d) for d >= 0.05.
* ``ENUM_ROWS``: the same per output channel (row), with each row's count sent: real pruned
  layers have rows of very different density, and coding each row at its own density goes
  below the global n*H(d).
* ``KNOWN`` (the receiver already holds the mask: 0 position bytes, a 4-byte mask check),
  ``FULL`` (dense: density 1) and ``EMPTY``.

Every stream is laid out so that both directions vectorise in numpy: unary parts, fixed-width
parts and the rare extra bits of truncated-binary codes go to separate bit streams.

Values: float32 (bit-exact), float16 or bfloat16 (round to nearest even) on request, optionally
byte-plane shuffled and compressed losslessly (zlib or lzma) when that is smaller.

Buffer layout (all integers little-endian or LEB128 varints)::

    magic 0xF7 | version | scheme | value code (dtype | compression << 4) | ndim
    | dims (varint each) | count (varint) | position bytes (varint) | scheme parameter (varint)
    | [KNOWN: crc32 of the receiver's mask bits, 4 B] | crc32 of everything else, 4 B
    | positions | values

Decoding checks every field before it allocates anything a header claims (the entry limit for
every dimension, the fewest and most position bits each scheme can need, the most a compressed
stream can inflate), verifies the checksum, insists that every stream ends where the buffer
does, and raises ``PayloadError`` naming the tensor and the fault on any bad input. Its work and
memory are O(buffer size + entries), about 17 bytes an entry at most.
"""

from __future__ import annotations

import functools
import heapq
import lzma
import math
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

MAGIC = 0xF7
FORMAT_VERSION = 1
MAX_NDIM = 8
# The most entries a header may claim unless the caller says otherwise (payloads pass each
# tensor's own size). A decode allocates at most about 17 bytes per entry (float64 values
# decompressed, the dense float64 output, the mask; positions need less), so 2**23 entries
# keep any default decode under ~150 MB; the models here have at most ~100k entries a tensor.
DEFAULT_MAX_ENTRIES = 1 << 23
# The most a compressed stream inflates, per byte of it: decoding checks a claimed size
# against it before it decompresses or allocates anything. Deflate codes a 258-byte match in
# no fewer than 2 bits (1032:1); the encoder's zlib reaches 1028.8:1 on 256 MB of zeros. xz
# (LZMA2, preset 6) reaches 6,851:1 on 256 MB of zeros (3,692:1 on 1 MB): an LZMA match of at
# most 273 bytes costs at least 14 binary decisions of at least 0.022 bits each (11-bit
# probabilities), about 7,090:1, so 10,000:1 leaves a margin.
MAX_EXPANSION = {"zlib": 1032, "lzma": 10_000}
LZMA_MEMLIMIT = 1 << 25  # preset 6 decodes with an 8 MiB dictionary; refuse streams needing more
BLOCK = 64  # ENUM block length: C(64, 32) < 2**61 fits a uint64 rank
HUFFMAN_MAX_BITS = 14
DENSITY_LEVELS = 1024  # block-count codes are built for densities quantised to 1/1024
# decoders work through long streams a piece at a time, so that their intermediates stay small
_SCAN_BITS = 1 << 16  # Golomb unary bits per window
_COUNT_CHUNK = 1 << 10  # ENUM block counts per batch of windows
_RANK_CHUNK = 1 << 12  # ENUM blocks unranked per batch
_FIELD_CHUNK = 1 << 16  # fixed-width fields gathered per batch
_INFLATE_PIECE = 1 << 20  # bytes fed to and taken from a decompressor per call
_MOST_ENTRIES = 1 << 48  # whatever a caller allows: keeps every bit field and sum in 64 bits


class PayloadError(ValueError):
    """A buffer that cannot be decoded; the message names the tensor and the fault."""


class Scheme(IntEnum):
    KNOWN = 0
    FULL = 1
    EMPTY = 2
    BITMAP = 3
    GOLOMB = 4
    ENUM = 5
    ENUM_ROWS = 6


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
        return None if self.value_dtype is None else np.dtype(_DECODED_DTYPE[self.value_dtype])


# ---------------------------------------------------------------------------- small helpers
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int, what: str, name: str) -> tuple[int, int]:
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


def _mask_crc(mask: np.ndarray) -> int:
    return zlib.crc32(np.packbits(mask.reshape(-1)).tobytes())


def binary_entropy(d: float) -> float:
    if d <= 0.0 or d >= 1.0:
        return 0.0
    return -d * math.log2(d) - (1 - d) * math.log2(1 - d)


def entropy_bound_bits(mask: np.ndarray) -> float:
    """n * H(d): the i.i.d. lower bound on the positions of a mask with density d."""
    n = mask.size
    return n * binary_entropy(int(mask.sum()) / n) if n else 0.0


def row_entropy_bound_bits(mask: np.ndarray) -> float:
    """Sum over output channels (rows) of len * H(d_row): the bound for per-row coding."""
    if mask.ndim < 2:
        return entropy_bound_bits(mask)
    rows = mask.reshape(mask.shape[0], -1)
    length = rows.shape[1]
    return float(sum(length * binary_entropy(k / length) for k in rows.sum(axis=1).tolist()))


# ---------------------------------------------------------------------------- bit streams
def _bits_fixed(values: np.ndarray, width: int) -> np.ndarray:
    """Each value as ``width`` bits, most significant first (uint8 0/1 array)."""
    if width == 0 or len(values) == 0:
        return np.zeros(0, np.uint8)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    return ((values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.uint8).ravel()


def _bits_varlen(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Each value in its own number of bits (widths may be 0)."""
    total = int(widths.sum())
    if total == 0:
        return np.zeros(0, np.uint8)
    owner = np.repeat(np.arange(len(widths)), widths)
    starts = np.cumsum(widths) - widths
    offset = np.arange(total) - starts[owner]
    shift = (widths[owner] - 1 - offset).astype(np.uint64)
    return ((values.astype(np.uint64)[owner] >> shift) & np.uint64(1)).astype(np.uint8)


def _gather_fields(padded: np.ndarray, starts: np.ndarray, widths: np.ndarray) -> np.ndarray:
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


class _BitReader:
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
        return _gather_fields(self.padded, at + ends - widths, widths)

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


# ---------------------------------------------------------------------------- Golomb gaps
def _golomb_parts(gaps: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    q, r = np.divmod(gaps, m)
    b = m.bit_length() - 1
    u = (1 << (b + 1)) - m
    return q, r, b, u


def _golomb_bits(gaps: np.ndarray, m: int) -> int:
    q, r, b, u = _golomb_parts(gaps, m)
    return int(q.sum()) + len(gaps) * (1 + b) + int((r >= u).sum())


def _gaps(flat: np.ndarray) -> np.ndarray:
    positions = np.flatnonzero(flat)
    return np.diff(positions, prepend=-1) - 1


def _best_golomb(gaps: np.ndarray, n: int) -> tuple[int, int]:
    """(bits, M) of the best Golomb parameter near the geometric optimum."""
    k = len(gaps)
    if k == 0:
        return 0, 1
    theta = max(1e-12, 1 - k / n)
    estimate = 1 if theta <= 0.5 else max(1, round(math.log(1 + theta) / -math.log(theta)))
    candidates = {max(1, estimate + delta) for delta in (-2, -1, 0, 1, 2)}
    return min((_golomb_bits(gaps, m), m) for m in candidates)


def _golomb_encode(gaps: np.ndarray, m: int) -> np.ndarray:
    q, r, b, u = _golomb_parts(gaps, m)
    unary = np.ones(int(q.sum()) + len(q), np.uint8)
    unary[np.cumsum(q + 1) - 1] = 0
    high = np.where(r < u, r, (r + u) >> 1)
    extra = ((r + u) & 1)[r >= u]
    return np.concatenate([unary, _bits_fixed(high, b), extra.astype(np.uint8)])


def _unary_end(reader: _BitReader, k: int, limit: int) -> int:
    """Bit index just past the k-th zero from the cursor on, searched before ``limit``."""
    found = 0
    for at in range(reader.pos, limit, _SCAN_BITS):
        window = reader.bits[at : min(limit, at + _SCAN_BITS)]
        zeros = len(window) - int(np.count_nonzero(window))
        if found + zeros >= k:
            return at + int(np.flatnonzero(window == 0)[k - found - 1]) + 1
        found += zeros
    raise PayloadError(f"tensor '{reader.name}': Golomb stream holds fewer than {k} codes")


def _golomb_decode(reader: _BitReader, k: int, m: int, flat: np.ndarray) -> None:
    """Set the k coded entries of ``flat``.

    The stream is k unary quotients, then k b-bit remainders, then one extra bit per remainder
    >= u. It is decoded a window of unary bits at a time with a cursor in each part, so the
    intermediates stay O(window) whatever k is."""
    if k == 0:
        return
    n = len(flat)
    b = m.bit_length() - 1
    u = (1 << (b + 1)) - m
    unary_end = _unary_end(reader, k, len(reader.bits) - k * b)
    high_at, extra_at = unary_end, unary_end + k * b
    code_start, last = reader.pos, -1
    for at in range(reader.pos, unary_end, _SCAN_BITS):
        ends = np.flatnonzero(reader.bits[at : min(unary_end, at + _SCAN_BITS)] == 0) + at
        if len(ends) == 0:  # inside a long quotient: it goes on in the next window
            continue
        q = ends - np.concatenate([[code_start], ends[:-1] + 1])
        code_start = int(ends[-1]) + 1
        if int(q.max()) > (n - 1) // m:  # a gap past the tensor (and no int64 overflow below)
            raise PayloadError(
                f"tensor '{reader.name}': Golomb positions run past the tensor's {n} entries"
            )
        high = reader.fixed_at(high_at, len(q), b, "Golomb remainders").astype(np.int64)
        high_at += len(q) * b
        big = high >= u
        extra = reader.take_at(extra_at, int(np.count_nonzero(big)), "Golomb extra bits")
        extra_at += len(extra)
        high[big] = ((high[big] << 1) | extra) - u
        positions = last + np.cumsum(q * m + high + 1)
        if positions[-1] >= n:
            raise PayloadError(
                f"tensor '{reader.name}': Golomb positions run past the tensor's {n} entries"
            )
        flat[positions] = True
        last = int(positions[-1])
    reader.pos = extra_at


# ---------------------------------------------------------------------------- enumerative blocks
def _binomial_table() -> np.ndarray:
    table = np.zeros((BLOCK + 1, BLOCK + 2), np.uint64)
    for p in range(BLOCK + 1):
        for j in range(min(p, BLOCK) + 1):
            table[p, j] = math.comb(p, j)
    return table


BINOM = _binomial_table()  # BINOM[p, j] = C(p, j)
# truncated binary over N = C(L, c) patterns: b = floor(log2 N), u = 2^(b+1) - N
_TB_B = np.zeros((BLOCK + 1, BLOCK + 1), np.int64)
_TB_U = np.zeros((BLOCK + 1, BLOCK + 1), np.uint64)
for _length in range(BLOCK + 1):
    for _c in range(_length + 1):
        _n = math.comb(_length, _c)
        _b = _n.bit_length() - 1
        _TB_B[_length, _c] = _b
        _TB_U[_length, _c] = (1 << (_b + 1)) - _n
_RANK_BITS = _TB_B.astype(np.uint8)  # b of each block, one byte per block when decoding
RANK_MAX_BITS = int(_TB_B.max()) + 1  # truncated binary: at most b + 1 bits


@functools.lru_cache(maxsize=DENSITY_LEVELS)  # a few hundred bytes each: every level fits
def _count_code(level: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical Huffman code for the number of kept entries in a full 64-block at density
    level/DENSITY_LEVELS: (code lengths, codes)."""
    d = level / DENSITY_LEVELS
    log_pmf = [
        math.lgamma(BLOCK + 1)
        - math.lgamma(c + 1)
        - math.lgamma(BLOCK - c + 1)
        + c * math.log(d)
        + (BLOCK - c) * math.log1p(-d)
        for c in range(BLOCK + 1)
    ]
    weights = [max(math.exp(v), 1e-300) for v in log_pmf]
    heap = [(w, i, (i,)) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    lengths = [0] * (BLOCK + 1)
    tie = len(heap)
    while len(heap) > 1:
        w1, _, s1 = heapq.heappop(heap)
        w2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (w1 + w2, tie, s1 + s2))
        tie += 1
    # limit code lengths (only very unlikely counts are affected), then restore Kraft <= 1
    lengths = [min(max(1, L), HUFFMAN_MAX_BITS) for L in lengths]
    kraft = sum(2.0**-L for L in lengths)
    order = sorted(range(BLOCK + 1), key=lambda s: weights[s])
    while kraft > 1.0:
        for s in order:
            if lengths[s] < HUFFMAN_MAX_BITS:
                kraft -= 2.0 ** -(lengths[s] + 1)
                lengths[s] += 1
                break
    codes = [0] * (BLOCK + 1)
    code, previous = 0, 0
    for s in sorted(range(BLOCK + 1), key=lambda s: (lengths[s], s)):
        code <<= lengths[s] - previous
        codes[s], previous = code, lengths[s]
        code += 1
    return np.array(lengths, np.int64), np.array(codes, np.uint64)


@functools.lru_cache(maxsize=256)
def _count_table(level: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode table of ``_count_code(level)``: the symbol and the code length of the code that
    every HUFFMAN_MAX_BITS-bit window starts with (length HUFFMAN_MAX_BITS + 1: no code).

    Canonical codes in (length, symbol) order fill the table from slot 0 without gaps, each
    symbol 2^(HUFFMAN_MAX_BITS - length) slots. uint8 keeps a table at 32 KB: a hostile run of
    distinct levels costs a rebuild (tens of microseconds) once this cache is full, not memory."""
    lengths, _ = _count_code(level)
    order = np.lexsort((np.arange(BLOCK + 1), lengths))
    spans = 1 << (HUFFMAN_MAX_BITS - lengths[order])
    size = 1 << HUFFMAN_MAX_BITS
    table_sym = np.zeros(size, np.uint8)
    table_len = np.full(size, HUFFMAN_MAX_BITS + 1, np.uint8)
    used = int(spans.sum())
    table_sym[:used] = np.repeat(order, spans)
    table_len[:used] = np.repeat(lengths[order], spans)
    return table_sym, table_len


def _levels(row_kept: np.ndarray, length: int) -> np.ndarray:
    """Density level of each row (round half to even, as Python's ``round``)."""
    level = np.rint(row_kept / length * DENSITY_LEVELS)
    return np.clip(level, 1, DENSITY_LEVELS - 1).astype(np.int64)


@dataclass
class _Segments:
    """The 64-entry blocks of one or more equal-length segments (the whole tensor, or each row).

    A block's count is coded unless it is its segment's last block (the segment's kept count,
    known to the decoder, fixes it); segments that are empty or full cost nothing at all."""

    block_len: np.ndarray  # length of each block (the last one of a segment may be shorter)
    counts: np.ndarray  # kept entries per block
    coded: np.ndarray  # bool: the block's count is coded
    degenerate: np.ndarray  # bool: the block's segment is empty or full
    level: np.ndarray  # density level of the block's segment (selects the count code)
    ranks: np.ndarray  # uint64 rank of each block's pattern among those with its count


def _layout(num_rows: int, length: int, row_kept: np.ndarray) -> _Segments:
    """Everything about the blocks that follows from the row lengths and kept counts."""
    per_row = -(-length // BLOCK)
    lengths = np.full(per_row, BLOCK, np.int64)
    lengths[-1] = length - BLOCK * (per_row - 1)
    row_of = np.repeat(np.arange(num_rows), per_row)
    degenerate = ((row_kept == 0) | (row_kept == length))[row_of]
    level = _levels(row_kept, length)[row_of]
    coded = np.tile(np.arange(per_row) < per_row - 1, num_rows) & ~degenerate
    zeros = np.zeros(num_rows * per_row, np.int64)
    return _Segments(
        np.tile(lengths, num_rows), zeros, coded, degenerate, level, zeros.astype(np.uint64)
    )


def _segments(rows: np.ndarray) -> _Segments:
    num_rows, length = rows.shape
    seg = _layout(num_rows, length, rows.sum(axis=1).astype(np.int64))
    per_row = len(seg.block_len) // num_rows
    padded = np.zeros((num_rows, per_row * BLOCK), bool)
    padded[:, :length] = rows
    blocks = padded.reshape(-1, BLOCK)
    seg.counts = blocks.sum(axis=1).astype(np.int64)
    kept_at = np.flatnonzero(blocks)
    block_id, pos = kept_at >> 6, kept_at & (BLOCK - 1)
    if len(block_id):
        starts = np.flatnonzero(np.diff(block_id, prepend=-1))
        rank_in_block = np.arange(len(block_id)) - np.repeat(
            starts, np.diff(starts, append=len(block_id))
        )
        seg.ranks[block_id[starts]] = np.add.reduceat(BINOM[pos, rank_in_block + 1], starts)
    return seg


def _enum_bits(seg: _Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count-code bits, rank bits, rank extra bits) for the blocks of ``seg``."""
    count_len = np.zeros(len(seg.counts), np.int64)
    count_val = np.zeros(len(seg.counts), np.uint64)
    for level in np.unique(seg.level[seg.coded]).tolist():
        lengths, codes = _count_code(level)
        here = seg.coded & (seg.level == level)
        count_len[here] = lengths[seg.counts[here]]
        count_val[here] = codes[seg.counts[here]]
    informative = ~seg.degenerate
    b = np.where(informative, _TB_B[seg.block_len, seg.counts], 0)
    u = _TB_U[seg.block_len, seg.counts]
    big = informative & (seg.ranks >= u)
    high = np.where(big, (seg.ranks + u) >> np.uint64(1), seg.ranks)
    extra = ((seg.ranks + u) & np.uint64(1))[big].astype(np.uint8)
    return _bits_varlen(count_val, count_len), _bits_varlen(high, b), extra


def _enum_size_bits(rows: np.ndarray, with_row_counts: bool) -> int:
    head = rows.shape[0] * rows.shape[1].bit_length() if with_row_counts else 0
    return head + sum(len(part) for part in _enum_bits(_segments(rows)))


def _enum_encode(rows: np.ndarray, with_row_counts: bool) -> np.ndarray:
    parts = []
    if with_row_counts:
        kept = rows.sum(axis=1).astype(np.uint64)
        parts.append(_bits_fixed(kept, rows.shape[1].bit_length()))
    parts.extend(_enum_bits(_segments(rows)))
    return np.concatenate(parts)


def _windows(span: np.ndarray) -> np.ndarray:
    """The HUFFMAN_MAX_BITS-bit window starting at every bit of ``span`` (zero past its end)."""
    padded = np.concatenate([span, np.zeros(HUFFMAN_MAX_BITS, np.uint8)]).astype(np.int16)
    windows = np.zeros(len(span), np.int16)
    for k in range(HUFFMAN_MAX_BITS):
        windows <<= 1
        windows |= padded[k : k + len(span)]
    return windows


def _decode_counts(reader: _BitReader, row_levels: np.ndarray, per_row: int) -> np.ndarray:
    """Canonical-Huffman block counts, ``per_row`` per row at the row's level, one table lookup
    per block, a chunk of blocks at a time: a chunk's codes lie within its first
    chunk * HUFFMAN_MAX_BITS bits, so its windows never need bits beyond them."""
    total = len(row_levels) * per_row
    out = np.empty(total, np.uint8)
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, total, _COUNT_CHUNK):
        blocks = np.arange(start, min(total, start + _COUNT_CHUNK))
        levels = row_levels[blocks // per_row].tolist()
        span = reader.bits[reader.pos : reader.pos + len(levels) * HUFFMAN_MAX_BITS]
        windows = _windows(span).tolist()
        decoded, pos, limit = [], 0, len(span)
        for lv in levels:
            if pos >= limit:
                raise PayloadError(
                    f"tensor '{reader.name}': position data ends inside the block counts"
                )
            table_sym, table_len = tables.get(lv) or tables.setdefault(lv, _count_table(lv))
            window = windows[pos]
            length_bits = int(table_len[window])
            if length_bits > HUFFMAN_MAX_BITS:
                raise PayloadError(f"tensor '{reader.name}': invalid block-count code")
            decoded.append(int(table_sym[window]))
            pos += length_bits
        reader.take(pos, "block counts")
        out[start : start + len(levels)] = decoded
    return out


def _enum_decode(
    reader: _BitReader, num_rows: int, length: int, row_kept: np.ndarray
) -> np.ndarray:
    """Decode the blocks of ``num_rows`` rows of ``length`` entries back to a flat bool mask,
    given each row's kept count.

    Only rows that are neither empty nor full have blocks to decode; each of them codes
    per_row - 1 block counts of at least one bit, and a one-block row a rank of at least one
    bit (C(L, c) >= L >= 2 patterns): checked before anything per block is allocated. Ranks
    are read and unranked a chunk of rows at a time."""
    per_row = -(-length // BLOCK)
    block_len = np.full(per_row, BLOCK, np.int64)
    block_len[-1] = length - BLOCK * (per_row - 1)
    flat = np.repeat(row_kept == length, length)  # the full rows; the others are filled below
    rows = np.flatnonzero((row_kept > 0) & (row_kept < length))
    if len(rows) * max(per_row - 1, 1) > reader.remaining:
        raise PayloadError(
            f"tensor '{reader.name}': position data is too short for the patterns of "
            f"{len(rows)} partly kept rows"
        )
    # each row's last block holds what its other blocks do not
    last = row_kept[rows]
    counts = np.zeros((len(rows), per_row), np.uint8)
    if per_row > 1:
        coded = _decode_counts(reader, _levels(last, length), per_row - 1)
        coded = coded.reshape(len(rows), per_row - 1)
        counts[:, :-1] = coded
        last -= coded.sum(axis=1, dtype=np.int64)
    if np.any(last < 0) or np.any(last > block_len[-1]):
        raise PayloadError(f"tensor '{reader.name}': block counts do not add up to the kept count")
    counts[:, -1] = last
    widths = _RANK_BITS[block_len, counts]
    high_at = reader.pos
    extra_at = high_at + int(widths.sum())
    reader.take_at(high_at, extra_at - high_at, "block ranks")
    step = max(1, _RANK_CHUNK // per_row)
    for first in range(0, len(rows), step):
        chunk = slice(first, first + step)
        c = counts[chunk].ravel().astype(np.int64)
        lens = np.tile(block_len, len(c) // per_row)
        b = widths[chunk].ravel()
        high = reader.fields_at(high_at, b, "block ranks")
        high_at += int(b.sum())
        u = _TB_U[lens, c]
        big = high >= u
        extra = reader.take_at(extra_at, int(np.count_nonzero(big)), "rank extra bits")
        extra_at += len(extra)
        ranks = high
        ranks[big] = ((high[big] << np.uint64(1)) | extra) - u[big]
        if np.any(ranks >= BINOM[lens, c]):
            raise PayloadError(f"tensor '{reader.name}': a block rank is out of range")
        starts = ((rows[chunk] * length)[:, None] + BLOCK * np.arange(per_row)).ravel()
        # unrank all blocks at once, from the highest kept index down (combinatorial numbers)
        for j in range(int(c.max(initial=0)), 0, -1):
            active = np.flatnonzero(c >= j)
            p = np.searchsorted(BINOM[:, j], ranks[active], side="right") - 1
            ranks[active] -= BINOM[p, j]
            flat[starts[active] + p] = True
    reader.pos = extra_at
    return flat


# ---------------------------------------------------------------------------- position schemes
@dataclass(frozen=True)
class _Choice:
    scheme: Scheme
    bits: int
    param: int = 0


def position_candidates(mask: np.ndarray) -> dict[str, int]:
    """Size in bits of every applicable position scheme for ``mask`` (for reports)."""
    flat = mask.reshape(-1)
    n, k = flat.size, int(flat.sum())
    sizes = {"bitmap": n}
    for invert in (False, True):
        gaps = _gaps(~flat if invert else flat)
        sizes["golomb-inverted" if invert else "golomb"] = _best_golomb(gaps, n)[0]
    if 0 < k < n:
        sizes["enum"] = _enum_size_bits(flat.reshape(1, -1), with_row_counts=False)
        if mask.ndim >= 2 and mask.shape[0] > 1:
            sizes["enum-rows"] = _enum_size_bits(
                mask.reshape(mask.shape[0], -1), with_row_counts=True
            )
    return sizes


def _choose(mask: np.ndarray) -> _Choice:
    flat = mask.reshape(-1)
    n, k = flat.size, int(flat.sum())
    if k == n:
        return _Choice(Scheme.FULL, 0)
    if k == 0:
        return _Choice(Scheme.EMPTY, 0)
    invert = k > n - k
    bits, m = _best_golomb(_gaps(~flat if invert else flat), n)
    best = _Choice(Scheme.GOLOMB, bits, (m << 1) | int(invert))
    if n < best.bits:
        best = _Choice(Scheme.BITMAP, n)
    bound = entropy_bound_bits(flat)
    if best.bits > 1.01 * bound + 64:  # Golomb is off the bound (d near 0.38): try enumerative
        enum_bits = _enum_size_bits(flat.reshape(1, -1), with_row_counts=False)
        if enum_bits < best.bits:
            best = _Choice(Scheme.ENUM, enum_bits)
    if mask.ndim >= 2 and mask.shape[0] > 1 and row_entropy_bound_bits(mask) < 0.99 * bound:
        row_bits = _enum_size_bits(mask.reshape(mask.shape[0], -1), with_row_counts=True)
        if row_bits < best.bits:
            best = _Choice(Scheme.ENUM_ROWS, row_bits)
    return best


def _encode_positions(mask: np.ndarray, choice: _Choice) -> bytes:
    flat = mask.reshape(-1)
    if choice.scheme in (Scheme.FULL, Scheme.EMPTY, Scheme.KNOWN):
        return b""
    if choice.scheme == Scheme.BITMAP:
        return np.packbits(flat).tobytes()
    if choice.scheme == Scheme.GOLOMB:
        invert = bool(choice.param & 1)
        bits = _golomb_encode(_gaps(~flat if invert else flat), choice.param >> 1)
    elif choice.scheme == Scheme.ENUM:
        bits = _enum_encode(flat.reshape(1, -1), with_row_counts=False)
    else:
        bits = _enum_encode(mask.reshape(mask.shape[0], -1), with_row_counts=True)
    return np.packbits(bits).tobytes()


def _check_positions(
    scheme: Scheme, shape: tuple[int, ...], count: int, pos_len: int, param: int, name: str
) -> None:
    """Refuse a header whose position section cannot hold what it claims, before anything is
    decoded or allocated.

    The bounds are the fewest and the most bits each scheme's encoder writes for this shape
    and count (it pads the last byte with at most 7 zero bits), so they never refuse an
    encoder's buffer:

    * FULL, EMPTY, KNOWN: no position bytes; BITMAP: exactly ceil(n / 8) bytes.
    * every other scheme codes a mask with 0 < count < n (the encoder sends FULL or EMPTY
      otherwise).
    * GOLOMB, k coded entries (the kept ones, or the pruned ones when inverted), parameter m,
      b = floor(log2 m): each code is a unary quotient (>= 1 bit) and a remainder of b or b + 1
      bits, so >= k (1 + b) bits; the quotients sum to at most (n - k) // m (the gaps do to
      n - k), so <= k (b + 2) + (n - k) // m bits.
    * ENUM, B = ceil(n / 64) blocks: every block but the last codes its count in 1 to
      HUFFMAN_MAX_BITS bits (code lengths are clipped to that), every rank takes at most
      RANK_MAX_BITS: >= B - 1 bits, <= (B - 1) HUFFMAN_MAX_BITS + B RANK_MAX_BITS. So
      n <= 64 (8 * position bytes + 1).
    * ENUM_ROWS, R rows of L entries: R row counts of bit_length(L) bits first (all rows may be
      empty or full, so that is all it needs), then per row at most what ENUM costs for L.
    """
    n = math.prod(shape)
    fixed = {Scheme.FULL: n, Scheme.EMPTY: 0}
    if scheme in (Scheme.FULL, Scheme.EMPTY, Scheme.KNOWN):
        if scheme in fixed and count != fixed[scheme]:
            raise PayloadError(f"tensor '{name}': {scheme.name} tensor with count {count} of {n}")
        if pos_len or param:
            raise PayloadError(
                f"tensor '{name}': {scheme.name} buffer with {pos_len} position bytes and "
                f"parameter {param} (both are 0)"
            )
        return
    if not 0 < count < n:
        raise PayloadError(
            f"tensor '{name}': {scheme.name} positions for a mask keeping {count} of {n} "
            f"entries (the encoder sends FULL or EMPTY)"
        )
    if scheme != Scheme.GOLOMB and param:
        raise PayloadError(f"tensor '{name}': {scheme.name} buffer with parameter {param}")
    if scheme == Scheme.BITMAP:
        fewest = most = n
    elif scheme == Scheme.GOLOMB:
        m = param >> 1
        if m < 1 or m > n + 1:
            raise PayloadError(f"tensor '{name}': Golomb parameter {m} is out of range")
        k = n - count if param & 1 else count
        b = m.bit_length() - 1
        fewest, most = k * (1 + b), k * (b + 2) + (n - k) // m
    else:
        if scheme == Scheme.ENUM_ROWS and len(shape) < 2:
            raise PayloadError(f"tensor '{name}': per-row positions need a tensor with rows")
        rows = shape[0] if scheme == Scheme.ENUM_ROWS else 1
        length = n // rows
        blocks = -(-length // BLOCK)
        per_row = (blocks - 1) * HUFFMAN_MAX_BITS + blocks * RANK_MAX_BITS
        if scheme == Scheme.ENUM:
            fewest, most = blocks - 1, per_row
        else:
            width = length.bit_length()
            fewest, most = rows * width, rows * (width + per_row)
    if 8 * pos_len < fewest or pos_len > (most + 7) // 8:
        raise PayloadError(
            f"tensor '{name}': {pos_len} position bytes cannot code this {scheme.name} mask "
            f"({count} of {n} entries need {fewest} to {most} bits)"
        )


def _decode_positions(section: memoryview, info: BufferInfo, name: str) -> np.ndarray:
    """The flat mask; ``_check_positions`` has bounded the section against the header."""
    n, count = math.prod(info.shape), info.count
    if info.scheme == Scheme.FULL:
        return np.ones(n, bool)
    if info.scheme == Scheme.EMPTY:
        return np.zeros(n, bool)
    if info.scheme == Scheme.BITMAP:
        packed = np.frombuffer(section, np.uint8)
        if n % 8 and packed[-1] & ((1 << (8 - n % 8)) - 1):
            raise PayloadError(f"tensor '{name}': bitmap padding bits are set")
        flat = np.unpackbits(packed, count=n).view(bool)
        kept = int(np.count_nonzero(flat))
        if kept != count:
            raise PayloadError(f"tensor '{name}': bitmap keeps {kept} entries, header says {count}")
        return flat
    reader = _BitReader(section, name)
    if info.scheme == Scheme.GOLOMB:
        invert, m = bool(info.param & 1), info.param >> 1
        flat = np.zeros(n, bool)
        _golomb_decode(reader, n - count if invert else count, m, flat)
        reader.finish()
        return np.logical_not(flat, out=flat) if invert else flat
    if info.scheme == Scheme.ENUM_ROWS:
        num_rows = info.shape[0]
        length = n // num_rows
        row_kept = reader.fixed(num_rows, length.bit_length(), "row counts").view(np.int64)
        if np.any(row_kept > length) or int(row_kept.sum()) != count:
            raise PayloadError(
                f"tensor '{name}': row counts do not add up to the kept count {count}"
            )
    else:
        num_rows, length, row_kept = 1, n, np.array([count], np.int64)
    flat = _enum_decode(reader, num_rows, length, row_kept)
    reader.finish()
    return flat


# ---------------------------------------------------------------------------- values
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


def _decode_values(values: memoryview, info: BufferInfo, name: str, *, fresh: bool) -> np.ndarray:
    """The kept values in their decoded dtype; ``fresh``: in memory of their own (otherwise
    possibly a read-only view of ``values``)."""
    dtype, count = info.value_dtype, info.count
    assert dtype is not None
    if info.compression == "none":
        wire = np.frombuffer(values, _WIRE_DTYPE[dtype], count)
    else:
        planes = _inflate_planes(values, info.compression, _ITEMSIZE[dtype], count, name)
        wire = planes.view(_WIRE_DTYPE[dtype]).reshape(count)
        fresh = False  # already ours
    if dtype == "bfloat16":
        widened = wire.astype(np.uint32)
        widened <<= np.uint32(16)
        return widened.view(np.float32)
    with np.errstate(invalid="ignore"):  # signalling NaNs widen quietly: values are not ours
        return wire.astype(_DECODED_DTYPE[dtype], copy=fresh)


def _default_value_dtype(values: np.ndarray, requested: str) -> str:
    if np.issubdtype(values.dtype, np.floating):
        return "float64" if values.dtype == np.float64 and requested == "float32" else requested
    if values.dtype == np.int64 or values.dtype == np.int32:
        return str(values.dtype)
    raise TypeError(f"cannot encode values of dtype {values.dtype}")


# ---------------------------------------------------------------------------- public API
def _header(
    scheme: Scheme, value_code: int, shape: tuple[int, ...], count: int, pos_len: int, param: int
) -> bytes:
    head = bytes([MAGIC, FORMAT_VERSION, int(scheme), value_code, len(shape)])
    return (
        head
        + b"".join(_varint(d) for d in shape)
        + _varint(count)
        + _varint(pos_len)
        + _varint(param)
    )


def _assemble(header: bytes, extra: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(header + extra))
    return header + extra + struct.pack("<I", crc) + body


def encode_mask(mask: np.ndarray) -> bytes:
    """Positions only: the smallest scheme for this mask."""
    mask = np.asarray(mask, bool)
    _check_shape(mask.shape)
    choice = _choose(mask)
    positions = _encode_positions(mask, choice)
    header = _header(choice.scheme, 0, mask.shape, int(mask.sum()), len(positions), choice.param)
    return _assemble(header, b"", positions)


def decode_mask(
    buf: bytes | bytearray | memoryview,
    *,
    name: str = "mask",
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> np.ndarray:
    info, body, _ = _parse(buf, name, max_entries)
    if info.scheme == Scheme.KNOWN:
        raise PayloadError(f"tensor '{name}': buffer does not carry positions (sent as known)")
    return _decode_positions(body[: info.position_bytes], info, name).reshape(info.shape)


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
    _check_shape(values.shape)
    if value_dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"value_dtype must be float32, float16 or bfloat16, got {value_dtype!r}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
    dtype = _default_value_dtype(values, value_dtype)
    if mask is None:
        mask_arr = None
        kept = values.reshape(-1)
        choice = _Choice(Scheme.FULL, 0)
    else:
        mask_arr = np.asarray(mask, bool)
        if mask_arr.shape != values.shape:
            raise ValueError(
                f"mask shape {mask_arr.shape} differs from values shape {values.shape}"
            )
        kept = values.reshape(-1)[mask_arr.reshape(-1)]
        choice = _choose(mask_arr) if send_mask else _Choice(Scheme.KNOWN, 0)
    raw = _values_to_bytes(kept, dtype)
    method = "none"
    if compression != "none" and raw:
        packed = _compress(raw, _ITEMSIZE[dtype], compression)
        if len(packed) < len(raw):
            raw, method = packed, compression
    positions = _encode_positions(mask_arr, choice) if mask_arr is not None else b""
    value_code = VALUE_DTYPES[dtype] | (COMPRESSIONS[method] << 4)
    header = _header(
        choice.scheme, value_code, values.shape, len(kept), len(positions), choice.param
    )
    extra = struct.pack("<I", _mask_crc(mask_arr)) if choice.scheme == Scheme.KNOWN else b""
    return _assemble(header, extra, positions + raw)


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
    info, body, known_crc = _parse(buf, name, max_entries, expected_shape)
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
            or _mask_crc(held) != known_crc
        ):
            raise PayloadError(
                f"tensor '{name}': the held mask is not the one the sender used (stale mask)"
            )
    # values first: they are the cheap part to check, and a dense tensor needs no positions
    kept = _decode_values(body[info.position_bytes :], info, name, fresh=info.scheme == Scheme.FULL)
    if info.scheme == Scheme.FULL:
        return kept.reshape(info.shape), np.ones(info.shape, bool)
    if held is not None:
        flat_mask = held.reshape(-1)
    else:
        flat_mask = _decode_positions(body[: info.position_bytes], info, name)
    dense = np.zeros(flat_mask.size, kept.dtype)
    dense[flat_mask] = kept
    return dense.reshape(info.shape), flat_mask.reshape(info.shape)


def inspect(
    buf: bytes | bytearray | memoryview,
    *,
    name: str = "tensor",
    max_entries: int = DEFAULT_MAX_ENTRIES,
    verify: bool = True,
) -> BufferInfo:
    """Parse a buffer's header without decoding it; ``verify`` also checks the checksum."""
    return _parse(buf, name, max_entries, verify=verify)[0]


def _check_shape(shape: tuple[int, ...]) -> None:
    if len(shape) > MAX_NDIM:
        raise ValueError(f"tensors may have at most {MAX_NDIM} dimensions, got {len(shape)}")


def _parse(
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
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise PayloadError(f"tensor '{name}': expected bytes, got {type(buf).__name__}")
    max_entries = min(max_entries, _MOST_ENTRIES)
    try:
        buf = memoryview(buf).cast("B")
    except (TypeError, ValueError):
        raise PayloadError(f"tensor '{name}': expected a contiguous byte buffer") from None
    if len(buf) < 5:
        raise PayloadError(f"tensor '{name}': buffer of {len(buf)} bytes is too short for a header")
    if buf[0] != MAGIC:
        raise PayloadError(f"tensor '{name}': not a fedticket payload (bad magic byte)")
    if buf[1] != FORMAT_VERSION:
        raise PayloadError(
            f"tensor '{name}': format version {buf[1]}, this decoder reads {FORMAT_VERSION}"
        )
    try:
        scheme = Scheme(buf[2])
    except ValueError:
        raise PayloadError(f"tensor '{name}': unknown position scheme {buf[2]}") from None
    value_code, ndim = buf[3], buf[4]
    if ndim > MAX_NDIM:
        raise PayloadError(f"tensor '{name}': header claims {ndim} dimensions (at most {MAX_NDIM})")
    pos = 5
    shape = []
    for i in range(ndim):
        dim, pos = _read_varint(buf, pos, f"dimension {i}", name)
        if dim > max_entries:  # a zero elsewhere would hide it from the product
            raise PayloadError(
                f"tensor '{name}': header claims dimension {i} of {dim}, more than the limit "
                f"{max_entries} entries"
            )
        shape.append(dim)
    count, pos = _read_varint(buf, pos, "count", name)
    pos_len, pos = _read_varint(buf, pos, "position length", name)
    param, pos = _read_varint(buf, pos, "scheme parameter", name)
    n = math.prod(shape)
    if n > max_entries or math.prod(d for d in shape if d) > max_entries:
        raise PayloadError(
            f"tensor '{name}': header claims {n} entries (shape {tuple(shape)}), more than the "
            f"limit {max_entries}"
        )
    if expected_shape is not None and tuple(shape) != tuple(expected_shape):
        raise PayloadError(
            f"tensor '{name}': shape {tuple(shape)} differs from the expected "
            f"{tuple(expected_shape)}"
        )
    if count > n:
        raise PayloadError(f"tensor '{name}': header keeps {count} of {n} entries")
    known_crc = 0
    if scheme == Scheme.KNOWN:
        if len(buf) < pos + 4:
            raise PayloadError(f"tensor '{name}': buffer truncated inside the header (mask check)")
        (known_crc,) = struct.unpack_from("<I", buf, pos)
        pos += 4
    if len(buf) < pos + 4:
        raise PayloadError(f"tensor '{name}': buffer truncated inside the header (checksum)")
    (crc,) = struct.unpack_from("<I", buf, pos)
    body_start = pos + 4
    if verify and zlib.crc32(buf[body_start:], zlib.crc32(buf[:pos])) != crc:
        raise PayloadError(f"tensor '{name}': checksum mismatch (buffer corrupted or truncated)")
    if pos_len > len(buf) - body_start:
        raise PayloadError(
            f"tensor '{name}': header claims {pos_len} position bytes, buffer holds fewer"
        )
    _check_positions(scheme, tuple(shape), count, pos_len, param, name)
    value_bytes = len(buf) - body_start - pos_len
    dtype_code, compression_code = value_code & 0x0F, value_code >> 4
    if compression_code not in _COMPRESSION_NAMES:
        raise PayloadError(f"tensor '{name}': unknown value compression code {compression_code}")
    compression = _COMPRESSION_NAMES[compression_code]
    if dtype_code == 0:
        value_dtype = None
        if value_bytes or compression != "none":
            raise PayloadError(
                f"tensor '{name}': mask buffer with {value_bytes} value bytes and "
                f"compression {compression} (a mask has neither)"
            )
    elif dtype_code in _DTYPE_NAMES:
        value_dtype = _DTYPE_NAMES[dtype_code]
        _check_value_bytes(value_bytes, count * _ITEMSIZE[value_dtype], compression, name)
    else:
        raise PayloadError(f"tensor '{name}': unknown value dtype code {dtype_code}")
    info = BufferInfo(
        scheme,
        tuple(shape),
        count,
        value_dtype,
        compression,
        body_start,
        pos_len,
        value_bytes,
        param,
    )
    return info, buf[body_start:], known_crc


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
