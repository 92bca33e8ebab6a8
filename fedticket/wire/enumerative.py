"""Enumerative coding of 64-entry blocks (positions' schemes ``ENUM`` and ``ENUM_ROWS``).

A mask (or each of its rows) is cut into blocks of ``BLOCK`` entries; each block is coded as
its count of kept entries, in a canonical Huffman code built on both sides from
Binomial(64, d) (so no table is sent), plus the block's rank among all patterns with that
count, in truncated binary. Within 0.5 % of n*H(d) for d >= 0.05. Per row (``ENUM_ROWS``),
each row's count is sent first and its blocks are coded at the row's own density.

A block's rank is ``block_ranks``' (by halves, a few table lookups per level). Stream layout:
[row counts], then the block-count codes, then the ranks' b-bit parts, then the ranks' extra
bits, each a run of fields that ``pack_fields`` writes and ``BitReader`` reads in one pass.
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass

import numpy as np

from fedticket.wire.bits import BitReader, pack_fields
from fedticket.wire.block_ranks import BINOM, BLOCK, rank_blocks, unrank_blocks
from fedticket.wire.errors import PayloadError

HUFFMAN_MAX_BITS = 14
DENSITY_LEVELS = 1024  # block-count codes are built for densities quantised to 1/1024
# the decoder works through long streams a piece at a time, so that its intermediates stay small
_COUNT_CHUNK = 1 << 12  # block counts per batch of windows
_RANK_CHUNK = 1 << 13  # blocks unranked per batch
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
def count_code(level: int) -> tuple[np.ndarray, np.ndarray]:
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
def count_table(level: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode table of ``count_code(level)``: the symbol and the code length of the code that
    every HUFFMAN_MAX_BITS-bit window starts with (length HUFFMAN_MAX_BITS + 1: no code).

    Canonical codes in (length, symbol) order fill the table from slot 0 without gaps, each
    symbol 2^(HUFFMAN_MAX_BITS - length) slots. uint8 keeps a table at 32 KB: a hostile run of
    distinct levels costs a rebuild (tens of microseconds) once this cache is full, not memory."""
    lengths, _ = count_code(level)
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
class _Blocks:
    """The 64-entry blocks of one or more equal-length segments (the whole tensor, or each row).

    A block's count is coded unless it is its segment's last block (the segment's kept count,
    known to the decoder, fixes it); segments that are empty or full cost nothing at all."""

    block_len: np.ndarray  # length of each block (the last one of a segment may be shorter)
    coded: np.ndarray  # bool: the block's count is coded
    degenerate: np.ndarray  # bool: the block's segment is empty or full
    level: np.ndarray  # density level of the block's segment (selects the count code)


def _layout(num_rows: int, length: int, row_kept: np.ndarray) -> _Blocks:
    """Everything about the blocks that follows from the row lengths and kept counts."""
    per_row = -(-length // BLOCK)
    lengths = np.full(per_row, BLOCK, np.int64)
    lengths[-1] = length - BLOCK * (per_row - 1)
    row_of = np.repeat(np.arange(num_rows), per_row)
    degenerate = ((row_kept == 0) | (row_kept == length))[row_of]
    level = _levels(row_kept, length)[row_of]
    coded = np.tile(np.arange(per_row) < per_row - 1, num_rows) & ~degenerate
    return _Blocks(np.tile(lengths, num_rows), coded, degenerate, level)


@dataclass(frozen=True)
class EnumFields:
    """What ``enum_encode`` writes, as fields (value, width): sized without being written."""

    values: np.ndarray
    widths: np.ndarray

    @property
    def bits(self) -> int:
        return int(self.widths.sum())

    def pack(self) -> bytes:
        return pack_fields(self.values, self.widths)


def _count_fields(blocks: _Blocks, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The block counts' Huffman codes (width 0 where a count is not coded): every level's
    code is gathered from one stacked table, so many row densities cost one pass."""
    if blocks.level.min() == blocks.level.max():
        lengths, codes = count_code(int(blocks.level[0]))
        return codes[counts], np.where(blocks.coded, lengths[counts], 0)
    levels, which = np.unique(blocks.level, return_inverse=True)
    tables = [count_code(int(level)) for level in levels]
    lengths = np.stack([lengths for lengths, _ in tables])
    codes = np.stack([codes for _, codes in tables])
    return codes[which, counts], np.where(blocks.coded, lengths[which, counts], 0)


def enum_fields(rows: np.ndarray, with_row_counts: bool) -> EnumFields:
    """The fields of the (R, L) bool ``rows``: each row's count first if ``with_row_counts``
    (``ENUM_ROWS``), then the block counts, the ranks' b-bit parts and their extra bits."""
    num_rows, length = rows.shape
    row_kept = np.count_nonzero(rows, axis=1).astype(np.int64)
    blocks = _layout(num_rows, length, row_kept)
    per_row = len(blocks.block_len) // num_rows
    if length % BLOCK:
        padded = np.zeros((num_rows, per_row * BLOCK), bool)
        padded[:, :length] = rows
    else:
        padded = np.ascontiguousarray(rows)
    counts, ranks = rank_blocks(padded.reshape(-1, BLOCK), blocks.block_len)
    code_values, code_widths = _count_fields(blocks, counts)
    informative = ~blocks.degenerate
    b = np.where(informative, _TB_B[blocks.block_len, counts], 0)
    u = _TB_U[blocks.block_len, counts]
    big = informative & (ranks >= u)
    high = np.where(big, (ranks + u) >> np.uint64(1), ranks)
    extra = (ranks + u)[big] & np.uint64(1)
    head = np.zeros(num_rows if with_row_counts else 0, np.int64) + length.bit_length()
    return EnumFields(
        np.concatenate([row_kept.astype(np.uint64)[: len(head)], code_values, high, extra]),
        np.concatenate([head, code_widths, b, np.ones(len(extra), np.int64)]),
    )


def enum_size_bits(rows: np.ndarray, with_row_counts: bool) -> int:
    """How many bits ``enum_encode`` writes for ``rows``."""
    return enum_fields(rows, with_row_counts).bits


def enum_encode(rows: np.ndarray, with_row_counts: bool) -> bytes:
    """The packed stream of the (R, L) bool ``rows`` (see ``enum_fields``)."""
    return enum_fields(rows, with_row_counts).pack()


_WINDOW_MASK = (1 << HUFFMAN_MAX_BITS) - 1
_BIT_SHIFTS = (32 - HUFFMAN_MAX_BITS - np.arange(8)).astype(np.uint32)


def _windows(reader: BitReader, at: int, count: int) -> np.ndarray:
    """The HUFFMAN_MAX_BITS-bit window of the section starting at each of ``count`` bits from
    bit ``at`` (zero past the section's end): the big-endian 32-bit word at every byte, shifted
    eight ways."""
    first, skip = at >> 3, at & 7
    nbytes = (skip + count + 7) >> 3
    raw = reader.padded[first : first + nbytes + 3]
    if len(raw) < nbytes + 3:
        raw = np.concatenate([raw, np.zeros(nbytes + 3 - len(raw), np.uint8)])
    words = np.lib.stride_tricks.as_strided(raw, (nbytes, 4), (1, 1)).copy().view(">u4")
    windows = (words >> _BIT_SHIFTS) & np.uint32(_WINDOW_MASK)
    return windows.ravel()[skip : skip + count].astype(np.int16)


@functools.lru_cache(maxsize=256)
def _likely_span(level: int, count: int) -> int:
    """Bits that ``count`` codes of ``level`` take, but for a one-in-a-billion excess, if the
    mask is i.i.d. at the level's density: the mean code length, plus six deviations of their
    sum. A chunk whose codes do not all start in it is decoded again over the full bound."""
    lengths, _ = count_code(level)
    d = level / DENSITY_LEVELS
    pmf = np.array([math.comb(BLOCK, c) * d**c * (1 - d) ** (BLOCK - c) for c in range(BLOCK + 1)])
    pmf /= pmf.sum()
    mean = float(pmf @ lengths)
    spread = math.sqrt(max(float(pmf @ lengths**2) - mean**2, 0.0) * count)
    return int(count * mean + 6 * spread) + HUFFMAN_MAX_BITS


def _decode_counts(reader: BitReader, row_levels: np.ndarray, per_row: int) -> np.ndarray:
    """Canonical-Huffman block counts, ``per_row`` per row at the row's level, one table lookup
    per block, a chunk of blocks at a time. A chunk's codes lie within its first
    chunk * HUFFMAN_MAX_BITS bits; a chunk at one level (every chunk of ``ENUM``) is decoded
    without a loop per block (``_one_level``) over the span its codes likely take
    (``_likely_span``), and again over the full bound only if they do not all start in it."""
    total = len(row_levels) * per_row
    out = np.empty(total, np.uint8)
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, total, _COUNT_CHUNK):
        blocks = np.arange(start, min(total, start + _COUNT_CHUNK))
        chunk_levels = row_levels[blocks // per_row]
        bound = min(len(blocks) * HUFFMAN_MAX_BITS, reader.remaining)
        if chunk_levels.min() == chunk_levels.max():
            level = int(chunk_levels[0])
            table = tables.get(level) or tables.setdefault(level, count_table(level))
            decoded, pos = None, 0
            for span in sorted({min(_likely_span(level, len(blocks)), bound), bound}):
                decoded, pos = _one_level(
                    reader, _windows(reader, reader.pos, span), table, len(blocks)
                )
                if decoded is not None:
                    break
            if decoded is None:
                raise PayloadError(
                    f"tensor '{reader.name}': position data ends inside the block counts"
                )
        else:
            windows = _windows(reader, reader.pos, bound)
            decoded, pos = _mixed_levels(reader, windows, chunk_levels.tolist(), tables)
        reader.take(pos, "block counts")
        out[start : start + len(blocks)] = decoded
    return out


_STRIDE_LOG = 4  # _one_level walks codes 2**_STRIDE_LOG at a time, then fills in between


def _one_level(
    reader: BitReader, windows: np.ndarray, table: tuple[np.ndarray, np.ndarray], count: int
) -> tuple[np.ndarray | None, int]:
    """``count`` codes of one table from the windows of a span: (symbols, bits used), or
    (None, 0) if the codes do not all start within the span.

    "The next code starts at bit + its length" is a jump over the span; squaring it
    _STRIDE_LOG times jumps 2**_STRIDE_LOG codes. That jump is walked from bit 0 to find
    every 2**_STRIDE_LOG-th code's start, and the squares fill in the starts between them
    (pointer doubling, Hillis and Steele 1986, cut short: no loop per code)."""
    table_sym, table_len = table
    limit = len(windows)
    lengths = table_len[windows].astype(np.int32)
    jump = np.arange(limit + 1, dtype=np.int32)  # jump[limit] = limit: past the end
    jump[:limit] = np.minimum(jump[:limit] + lengths, limit)
    powers = [jump]
    for _ in range(_STRIDE_LOG):
        powers.append(powers[-1][powers[-1]])
    stride = powers.pop()
    starts = np.zeros(-(-count >> _STRIDE_LOG), np.int32)
    at = 0
    for i in range(1, len(starts)):
        at = int(stride[at])
        starts[i] = at
    for power in reversed(powers):
        starts = np.stack([starts, power[starts]], axis=1).ravel()
    starts = starts[:count]
    if starts[-1] >= limit:
        return None, 0
    used = lengths[starts]
    if used.max() > HUFFMAN_MAX_BITS:
        raise PayloadError(f"tensor '{reader.name}': invalid block-count code")
    return table_sym[windows[starts]], int(starts[-1] + used[-1])


def _mixed_levels(
    reader: BitReader,
    windows: np.ndarray,
    levels: list[int],
    tables: dict[int, tuple[np.ndarray, np.ndarray]],
) -> tuple[list[int], int]:
    """The codes of a chunk whose rows differ in level, one after the other."""
    window_list, limit = windows.tolist(), len(windows)
    decoded, pos = [], 0
    for lv in levels:
        if pos >= limit:
            raise PayloadError(
                f"tensor '{reader.name}': position data ends inside the block counts"
            )
        table_sym, table_len = tables.get(lv) or tables.setdefault(lv, count_table(lv))
        window = window_list[pos]
        length_bits = int(table_len[window])
        if length_bits > HUFFMAN_MAX_BITS:
            raise PayloadError(f"tensor '{reader.name}': invalid block-count code")
        decoded.append(int(table_sym[window]))
        pos += length_bits
    return decoded, pos


def enum_decode(reader: BitReader, num_rows: int, length: int, row_kept: np.ndarray) -> np.ndarray:
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
    # a batch is whole rows, or a piece of one long row: blocks are read in stream order
    rows_per_batch = max(1, _RANK_CHUNK // per_row)
    blocks_per_batch = min(per_row, _RANK_CHUNK)
    grid = flat.reshape(num_rows, length)
    for first in range(0, len(rows), rows_per_batch):
        group = slice(first, first + rows_per_batch)
        for j0 in range(0, per_row, blocks_per_batch):
            j1 = min(per_row, j0 + blocks_per_batch)
            c = counts[group, j0:j1].ravel().astype(np.int64)
            lens = np.tile(block_len[j0:j1], len(c) // (j1 - j0))
            b = widths[group, j0:j1].ravel()
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
            bits = unrank_blocks(c, ranks, lens).reshape(len(c) // (j1 - j0), -1)
            end = min(length, BLOCK * j1)
            grid[rows[group], BLOCK * j0 : end] = bits[:, : end - BLOCK * j0]
    reader.pos = extra_at
    return flat
