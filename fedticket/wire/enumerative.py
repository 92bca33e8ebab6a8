"""Enumerative coding of 64-entry blocks (positions' schemes ``ENUM`` and ``ENUM_ROWS``).

A mask (or each of its rows) is cut into blocks of ``BLOCK`` entries; each block is coded as
its count of kept entries, in a canonical Huffman code built on both sides from
Binomial(64, d) (so no table is sent), plus the block's rank among all patterns with that
count, in truncated binary. Within 0.5 % of n*H(d) for d >= 0.05. Per row (``ENUM_ROWS``),
each row's count is sent first and its blocks are coded at the row's own density.

Stream layout: [row counts], then the block-count codes, then the ranks' b-bit parts, then the
ranks' extra bits, so that both directions vectorise.
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass

import numpy as np

from fedticket.wire.bits import BitReader, bits_fixed, bits_varlen
from fedticket.wire.errors import PayloadError

BLOCK = 64  # block length: C(64, 32) < 2**61 fits a uint64 rank
HUFFMAN_MAX_BITS = 14
DENSITY_LEVELS = 1024  # block-count codes are built for densities quantised to 1/1024
# the decoder works through long streams a piece at a time, so that its intermediates stay small
_COUNT_CHUNK = 1 << 10  # block counts per batch of windows
_RANK_CHUNK = 1 << 12  # blocks unranked per batch


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
        lengths, codes = count_code(level)
        here = seg.coded & (seg.level == level)
        count_len[here] = lengths[seg.counts[here]]
        count_val[here] = codes[seg.counts[here]]
    informative = ~seg.degenerate
    b = np.where(informative, _TB_B[seg.block_len, seg.counts], 0)
    u = _TB_U[seg.block_len, seg.counts]
    big = informative & (seg.ranks >= u)
    high = np.where(big, (seg.ranks + u) >> np.uint64(1), seg.ranks)
    extra = ((seg.ranks + u) & np.uint64(1))[big].astype(np.uint8)
    return bits_varlen(count_val, count_len), bits_varlen(high, b), extra


def enum_size_bits(rows: np.ndarray, with_row_counts: bool) -> int:
    """How many bits ``enum_encode`` writes for ``rows``."""
    head = rows.shape[0] * rows.shape[1].bit_length() if with_row_counts else 0
    return head + sum(len(part) for part in _enum_bits(_segments(rows)))


def enum_encode(rows: np.ndarray, with_row_counts: bool) -> np.ndarray:
    """The stream of the (R, L) bool ``rows``: each row's count first if ``with_row_counts``
    (``ENUM_ROWS``), then its blocks."""
    parts = []
    if with_row_counts:
        kept = rows.sum(axis=1).astype(np.uint64)
        parts.append(bits_fixed(kept, rows.shape[1].bit_length()))
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


def _decode_counts(reader: BitReader, row_levels: np.ndarray, per_row: int) -> np.ndarray:
    """Canonical-Huffman block counts, ``per_row`` per row at the row's level, one table lookup
    per block, a chunk of blocks at a time: a chunk's codes lie within its first
    chunk * HUFFMAN_MAX_BITS bits, so its windows never need bits beyond them. A chunk at one
    level (every chunk of ``ENUM``) is decoded without a loop per block (``_one_level``)."""
    total = len(row_levels) * per_row
    out = np.empty(total, np.uint8)
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, total, _COUNT_CHUNK):
        blocks = np.arange(start, min(total, start + _COUNT_CHUNK))
        chunk_levels = row_levels[blocks // per_row]
        span = reader.bits[reader.pos : reader.pos + len(blocks) * HUFFMAN_MAX_BITS]
        windows = _windows(span)
        if chunk_levels.min() == chunk_levels.max():
            level = int(chunk_levels[0])
            table = tables.get(level) or tables.setdefault(level, count_table(level))
            decoded, pos = _one_level(reader, windows, table, len(blocks))
        else:
            decoded, pos = _mixed_levels(reader, windows, chunk_levels.tolist(), tables)
        reader.take(pos, "block counts")
        out[start : start + len(blocks)] = decoded
    return out


def _one_level(
    reader: BitReader, windows: np.ndarray, table: tuple[np.ndarray, np.ndarray], count: int
) -> tuple[np.ndarray, int]:
    """``count`` codes of one table from the windows of a span: where each code starts, found
    by pointer doubling over "the next code starts at bit + its length" (log2(count) gathers
    over the span, no loop per code); (symbols, bits used)."""
    table_sym, table_len = table
    limit = len(windows)
    lengths = table_len[windows].astype(np.int64)
    jump = np.append(np.minimum(np.arange(limit) + lengths, limit), limit)  # limit: past the end
    starts = np.zeros(1, np.int64)
    while len(starts) < count:  # starts holds codes 0..L-1 and jump goes L codes ahead
        starts = np.concatenate([starts, jump[starts]])
        jump = jump[jump]
    starts = starts[:count]
    if starts[-1] >= limit:
        raise PayloadError(f"tensor '{reader.name}': position data ends inside the block counts")
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
