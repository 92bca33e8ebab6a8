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

Decoding checks every field before it allocates anything a header claims, verifies the
checksum, and raises ``PayloadError`` naming the tensor and the fault on any bad input.
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
DEFAULT_MAX_ENTRIES = 1 << 30  # a header may not make the decoder allocate more than this
BLOCK = 64  # ENUM block length: C(64, 32) < 2**61 fits a uint64 rank
HUFFMAN_MAX_BITS = 14
DENSITY_LEVELS = 1024  # block-count codes are built for densities quantised to 1/1024


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


def _values_fixed(bits: np.ndarray, count: int, width: int) -> np.ndarray:
    if width == 0 or count == 0:
        return np.zeros(count, np.uint64)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    return (bits[: count * width].reshape(count, width).astype(np.uint64) << shifts).sum(
        axis=1, dtype=np.uint64
    )


def _values_varlen(bits: np.ndarray, widths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(widths), np.uint64)
    total = int(widths.sum())
    if total == 0:
        return out
    owner = np.repeat(np.arange(len(widths)), widths)
    starts = np.cumsum(widths) - widths
    shift = (widths[owner] - 1 - (np.arange(total) - starts[owner])).astype(np.uint64)
    contrib = bits[:total].astype(np.uint64) << shift
    nonzero = widths > 0
    out[nonzero] = np.add.reduceat(contrib, starts[nonzero])
    return out


class _BitReader:
    """Sequential view over a position section's bits, with bounds checks."""

    def __init__(self, section: bytes, name: str) -> None:
        self.bits = np.unpackbits(np.frombuffer(section, np.uint8))
        self.pos = 0
        self.name = name

    def take(self, count: int, what: str) -> np.ndarray:
        if count < 0 or self.pos + count > len(self.bits):
            raise PayloadError(f"tensor '{self.name}': position data ends inside the {what}")
        out = self.bits[self.pos : self.pos + count]
        self.pos += count
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


def _golomb_decode(reader: _BitReader, k: int, m: int, n: int) -> np.ndarray:
    """Positions of the k coded entries."""
    if k == 0:
        return np.zeros(0, np.int64)
    bits = reader.bits[reader.pos :]
    zeros = np.flatnonzero(bits == 0)
    if len(zeros) < k:
        raise PayloadError(f"tensor '{reader.name}': Golomb stream holds fewer than {k} codes")
    ends = zeros[:k]
    q = np.diff(ends, prepend=-1) - 1
    reader.take(int(ends[-1]) + 1, "Golomb unary stream")
    b = m.bit_length() - 1
    u = (1 << (b + 1)) - m
    high = _values_fixed(reader.take(k * b, "Golomb remainders"), k, b).astype(np.int64)
    needs_extra = high >= u
    r = high.copy()
    extra = reader.take(int(needs_extra.sum()), "Golomb extra bits").astype(np.int64)
    r[needs_extra] = ((high[needs_extra] << 1) | extra) - u
    gaps = q.astype(np.int64) * m + r
    positions = np.cumsum(gaps + 1) - 1
    if positions[-1] >= n:
        raise PayloadError(
            f"tensor '{reader.name}': Golomb positions run past the tensor's {n} entries"
        )
    return positions


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


@functools.lru_cache(maxsize=256)
def _count_code(level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Canonical Huffman code for the number of kept entries in a full 64-block at density
    level/DENSITY_LEVELS: (lengths, codes, decode-table symbols, decode-table lengths)."""
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
    table_sym = np.zeros(1 << HUFFMAN_MAX_BITS, np.int64)
    table_len = np.full(1 << HUFFMAN_MAX_BITS, HUFFMAN_MAX_BITS + 1, np.int64)  # unused slots
    for s in range(BLOCK + 1):
        lo = codes[s] << (HUFFMAN_MAX_BITS - lengths[s])
        hi = (codes[s] + 1) << (HUFFMAN_MAX_BITS - lengths[s])
        table_sym[lo:hi], table_len[lo:hi] = s, lengths[s]
    return np.array(lengths, np.int64), np.array(codes, np.uint64), table_sym, table_len


def _level(kept: int, length: int) -> int:
    return min(DENSITY_LEVELS - 1, max(1, round(kept / length * DENSITY_LEVELS)))


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
    level = np.array([_level(int(k), length) for k in row_kept.tolist()], np.int64)[row_of]
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
        lengths, codes, _, _ = _count_code(level)
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


def _decode_counts(reader: _BitReader, levels: list[int]) -> list[int]:
    """Canonical-Huffman block counts, one table lookup per block."""
    span = reader.bits[reader.pos : reader.pos + len(levels) * HUFFMAN_MAX_BITS]
    window_bits = np.concatenate([span, np.zeros(HUFFMAN_MAX_BITS, np.uint8)])
    weights = (1 << np.arange(HUFFMAN_MAX_BITS - 1, -1, -1)).astype(np.int64)
    # the HUFFMAN_MAX_BITS-bit window starting at every bit position
    windows = np.lib.stride_tricks.sliding_window_view(window_bits, HUFFMAN_MAX_BITS) @ weights
    windows = windows.tolist()
    limit = len(span)
    tables = {lv: _count_code(lv) for lv in set(levels)}
    decoded, pos = [], 0
    for lv in levels:
        if pos >= limit:
            raise PayloadError(
                f"tensor '{reader.name}': position data ends inside the block counts"
            )
        table_sym, table_len = tables[lv][2], tables[lv][3]
        window = windows[pos]
        length_bits = int(table_len[window])
        if length_bits > HUFFMAN_MAX_BITS:
            raise PayloadError(f"tensor '{reader.name}': invalid block-count code")
        decoded.append(int(table_sym[window]))
        pos += length_bits
    reader.take(pos, "block counts")
    return decoded


def _enum_decode(
    reader: _BitReader, num_rows: int, length: int, row_kept: np.ndarray
) -> np.ndarray:
    """Decode blocks back to a (rows, length) bool matrix, given each row's kept count."""
    seg = _layout(num_rows, length, row_kept)
    block_len, counts, per_row = seg.block_len, seg.counts, len(seg.block_len) // max(num_rows, 1)
    coded = np.flatnonzero(seg.coded)
    if len(coded):
        counts[coded] = _decode_counts(reader, seg.level[coded].tolist())
    # each segment's last block holds what its other blocks do not
    last = np.arange(per_row - 1, len(counts), per_row)
    counts[last] = row_kept - np.add.reduceat(counts, np.arange(0, len(counts), per_row))
    full_blocks = np.repeat(row_kept == length, per_row)
    counts[full_blocks] = block_len[full_blocks]
    if np.any(counts < 0) or np.any(counts > block_len):
        raise PayloadError(f"tensor '{reader.name}': block counts do not add up to the kept count")
    informative = ~seg.degenerate
    b = np.where(informative, _TB_B[block_len, counts], 0)
    u = _TB_U[block_len, counts]
    high = _values_varlen(reader.take(int(b.sum()), "block ranks"), b)
    big = informative & (high >= u)
    extra = reader.take(int(big.sum()), "rank extra bits").astype(np.uint64)
    ranks = high.copy()
    ranks[big] = ((high[big] << np.uint64(1)) | extra) - u[big]
    ranks[~informative] = 0
    total = BINOM[block_len, counts]
    if np.any(informative & (ranks >= total)):
        raise PayloadError(f"tensor '{reader.name}': a block rank is out of range")
    # unrank all blocks at once, from the highest kept index down (combinatorial number system)
    out = np.zeros((len(block_len), BLOCK), bool)
    remaining = ranks.copy()
    for j in range(BLOCK, 0, -1):
        active = np.flatnonzero(informative & (counts >= j))
        if len(active) == 0:
            continue
        p = np.searchsorted(BINOM[:, j], remaining[active], side="right") - 1
        remaining[active] -= BINOM[p, j]
        out[active, p] = True
    out[full_blocks] = np.arange(BLOCK) < block_len[full_blocks, None]
    return out.reshape(num_rows, per_row * BLOCK)[:, :length]


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


def _decode_positions(
    section: bytes, scheme: Scheme, param: int, shape: tuple[int, ...], count: int, name: str
) -> np.ndarray:
    n = math.prod(shape)
    if scheme == Scheme.FULL:
        return np.ones(n, bool)
    if scheme == Scheme.EMPTY:
        return np.zeros(n, bool)
    if scheme == Scheme.BITMAP:
        if len(section) != (n + 7) // 8:
            raise PayloadError(
                f"tensor '{name}': bitmap holds {len(section)} bytes, expected {(n + 7) // 8}"
            )
        flat = np.unpackbits(np.frombuffer(section, np.uint8), count=n).astype(bool)
        if int(flat.sum()) != count:
            raise PayloadError(
                f"tensor '{name}': bitmap keeps {int(flat.sum())} entries, header says {count}"
            )
        return flat
    if n == 0:
        raise PayloadError(f"tensor '{name}': {scheme.name} positions for a tensor without entries")
    reader = _BitReader(section, name)
    if scheme == Scheme.GOLOMB:
        invert, m = bool(param & 1), param >> 1
        if m < 1 or m > n + 1:
            raise PayloadError(f"tensor '{name}': Golomb parameter {m} is out of range")
        coded = n - count if invert else count
        flat = np.zeros(n, bool)
        flat[_golomb_decode(reader, coded, m, n)] = True
        reader.finish()
        return ~flat if invert else flat
    if scheme in (Scheme.ENUM, Scheme.ENUM_ROWS):
        if scheme == Scheme.ENUM_ROWS and len(shape) < 2:
            raise PayloadError(f"tensor '{name}': per-row positions need a tensor with rows")
        num_rows = shape[0] if scheme == Scheme.ENUM_ROWS else 1
        length = n // num_rows if num_rows else 0
        if scheme == Scheme.ENUM_ROWS:
            width = length.bit_length()
            row_kept = _values_fixed(
                reader.take(num_rows * width, "row counts"), num_rows, width
            ).astype(np.int64)
            if np.any(row_kept > length) or int(row_kept.sum()) != count:
                raise PayloadError(
                    f"tensor '{name}': row counts do not add up to the kept count {count}"
                )
        else:
            row_kept = np.array([count], np.int64)
        rows = _enum_decode(reader, num_rows, length, row_kept)
        reader.finish()
        return rows.reshape(-1)
    raise PayloadError(f"tensor '{name}': unknown position scheme {int(scheme)}")


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


def _values_from_bytes(raw: bytes, dtype: str, count: int) -> np.ndarray:
    if dtype == "bfloat16":
        return (
            np.frombuffer(raw, _WIRE_DTYPE["bfloat16"], count).astype(np.uint32) << np.uint32(16)
        ).view(np.float32)
    return np.frombuffer(raw, _WIRE_DTYPE[dtype], count).astype(_DECODED_DTYPE[dtype])


def _compress(raw: bytes, itemsize: int, method: str) -> bytes:
    planes = np.frombuffer(raw, np.uint8).reshape(-1, itemsize).T.tobytes()  # byte-plane shuffle
    return zlib.compress(planes, 6) if method == "zlib" else lzma.compress(planes, preset=6)


def _decompress(data: bytes, itemsize: int, count: int, method: str, name: str) -> bytes:
    expected = itemsize * count
    try:
        if method == "zlib":
            inflater = zlib.decompressobj()
            planes = inflater.decompress(data, expected + 1)
            done = inflater.eof and not inflater.unconsumed_tail
        else:
            inflater = lzma.LZMADecompressor()
            planes = inflater.decompress(data, expected + 1)
            done = inflater.eof
    except (zlib.error, lzma.LZMAError) as exc:
        raise PayloadError(f"tensor '{name}': compressed values are corrupt ({exc})") from None
    if len(planes) != expected or not done:
        raise PayloadError(
            f"tensor '{name}': compressed values hold {len(planes)} bytes, expected {expected}"
        )
    return np.frombuffer(planes, np.uint8).reshape(itemsize, count).T.tobytes()


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
    buf: bytes, *, name: str = "mask", max_entries: int = DEFAULT_MAX_ENTRIES
) -> np.ndarray:
    info, body_start, _ = _parse(buf, name, max_entries)
    if info.scheme == Scheme.KNOWN:
        raise PayloadError(f"tensor '{name}': buffer does not carry positions (sent as known)")
    section = buf[body_start : body_start + info.position_bytes]
    return _decode_positions(
        section, info.scheme, info.param, info.shape, info.count, name
    ).reshape(info.shape)


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
    buf: bytes,
    mask: np.ndarray | None = None,
    *,
    name: str = "tensor",
    expected_shape: tuple[int, ...] | None = None,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> tuple[np.ndarray, np.ndarray]:
    """(dense values with zeros outside the mask, the mask). ``mask`` is required when the
    buffer was encoded with ``send_mask=False``; ``expected_shape`` rejects a wrong-shaped
    tensor before anything is allocated."""
    info, body_start, known_crc = _parse(buf, name, max_entries, expected_shape)
    if info.value_dtype is None:
        raise PayloadError(f"tensor '{name}': buffer holds a mask, not values")
    if info.scheme == Scheme.KNOWN:
        if mask is None:
            raise PayloadError(
                f"tensor '{name}': positions were not sent; pass the mask the receiver holds"
            )
        held = np.asarray(mask, bool)
        if (
            held.shape != info.shape
            or int(held.sum()) != info.count
            or _mask_crc(held) != known_crc
        ):
            raise PayloadError(
                f"tensor '{name}': the held mask is not the one the sender used (stale mask)"
            )
        flat_mask = held.reshape(-1)
    else:
        section = buf[body_start : body_start + info.position_bytes]
        flat_mask = _decode_positions(
            section, info.scheme, info.param, info.shape, info.count, name
        )
    value_data = buf[body_start + info.position_bytes :]
    itemsize = _ITEMSIZE[info.value_dtype]
    if info.compression == "none":
        raw = value_data
    else:
        raw = _decompress(value_data, itemsize, info.count, info.compression, name)
    kept = _values_from_bytes(raw, info.value_dtype, info.count)
    dense = np.zeros(math.prod(info.shape), _DECODED_DTYPE[info.value_dtype])
    dense[flat_mask] = kept
    return dense.reshape(info.shape), flat_mask.reshape(info.shape)


def inspect(
    buf: bytes, *, name: str = "tensor", max_entries: int = DEFAULT_MAX_ENTRIES, verify: bool = True
) -> BufferInfo:
    """Parse a buffer's header without decoding it; ``verify`` also checks the checksum."""
    return _parse(buf, name, max_entries, verify=verify)[0]


def _check_shape(shape: tuple[int, ...]) -> None:
    if len(shape) > MAX_NDIM:
        raise ValueError(f"tensors may have at most {MAX_NDIM} dimensions, got {len(shape)}")


def _parse(
    buf: bytes,
    name: str,
    max_entries: int,
    expected_shape: tuple[int, ...] | None = None,
    *,
    verify: bool = True,
) -> tuple[BufferInfo, int, int]:
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise PayloadError(f"tensor '{name}': expected bytes, got {type(buf).__name__}")
    buf = bytes(buf)
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
        shape.append(dim)
    count, pos = _read_varint(buf, pos, "count", name)
    pos_len, pos = _read_varint(buf, pos, "position length", name)
    param, pos = _read_varint(buf, pos, "scheme parameter", name)
    n = math.prod(shape)
    if n > max_entries:
        raise PayloadError(
            f"tensor '{name}': header claims {n} entries, more than the limit {max_entries}"
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
    if scheme in (Scheme.FULL, Scheme.EMPTY) and count != (n if scheme == Scheme.FULL else 0):
        raise PayloadError(f"tensor '{name}': {scheme.name} tensor with count {count} of {n}")
    value_bytes = len(buf) - body_start - pos_len
    dtype_code, compression_code = value_code & 0x0F, value_code >> 4
    if dtype_code == 0:
        value_dtype = None
        if value_bytes:
            raise PayloadError(f"tensor '{name}': mask buffer has {value_bytes} trailing bytes")
    elif dtype_code in _DTYPE_NAMES:
        value_dtype = _DTYPE_NAMES[dtype_code]
    else:
        raise PayloadError(f"tensor '{name}': unknown value dtype code {dtype_code}")
    if compression_code not in _COMPRESSION_NAMES:
        raise PayloadError(f"tensor '{name}': unknown value compression code {compression_code}")
    compression = _COMPRESSION_NAMES[compression_code]
    if (
        value_dtype is not None
        and compression == "none"
        and value_bytes != count * _ITEMSIZE[value_dtype]
    ):
        raise PayloadError(
            f"tensor '{name}': {value_bytes} value bytes for {count} {value_dtype} values "
            f"(expected {count * _ITEMSIZE[value_dtype]})"
        )
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
    return info, body_start, known_crc
