"""Ranks of block patterns: a block of up to 64 entries with c kept <-> a number in [0, C(len, c)).

A block is split into two halves of 32 entries and each half into two leaves of 16. A leaf's
rank is its place among the 16-bit patterns with its count, in increasing order (one table
lookup; a shorter leaf's patterns come first, so its ranks are [0, C(len, c)) too). A node
with children of lengths (a, b) and counts (c_a, c_b) orders its patterns by c_a, then by the
children's ranks in mixed radix::

    rank = offset[b, c, c_a] + rank_a * C(b, c_b) + rank_b,
    offset[b, c, c_a] = sum over i < c_a of C(a, i) * C(b, c - i).

By Vandermonde's identity this maps the C(len, c) patterns onto [0, C(len, c)) one to one, so a
rank costs exactly what a colex rank did (enumerative coding, Cover 1973), but both directions
are a few table lookups per level, vectorised over all blocks, instead of one step per kept
entry. The right child may be shorter or empty (a row's last block): offset and C(b, .) then
reduce to rank = rank_a. Format version 2 (version 1 ranked blocks in colex order).
"""

from __future__ import annotations

import functools
import math

import numpy as np

BLOCK = 64
HALF = 32
LEAF = 16
_WIDTH = {HALF: 64, LEAF: 32}  # offset slots per (b, c) row: a power of two above a + 1


def _binomials(size: int) -> np.ndarray:
    table = np.zeros((size + 1, size + 1), np.uint64)
    for p in range(size + 1):
        for j in range(p + 1):
            table[p, j] = math.comb(p, j)
    return table


BINOM = _binomials(BLOCK)  # BINOM[p, j] = C(p, j); C(64, 32) < 2**61


@functools.cache
def _leaf_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(popcount, rank, patterns by (count, value), where each count's patterns start) of
    every 16-bit leaf."""
    values = np.arange(1 << LEAF, dtype=np.uint32)
    popcount = np.zeros(1 << LEAF, np.uint8)
    for bit in range(LEAF):
        popcount += ((values >> bit) & 1).astype(np.uint8)
    by_count = np.lexsort((values, popcount)).astype(np.uint16)
    starts = np.zeros(LEAF + 2, np.int64)
    starts[1:] = np.cumsum(np.bincount(popcount, minlength=LEAF + 1))
    rank = np.empty(1 << LEAF, np.uint16)
    rank[by_count] = np.arange(1 << LEAF) - starts[popcount[by_count]]
    return popcount, rank, by_count, starts


@functools.cache
def _offsets(a: int) -> np.ndarray:
    """offset[b, c, c_a] of a node whose left child holds ``a`` entries, flattened; b in
    [0, a], c in [0, 2a], c_a in [0, width): non-decreasing in c_a, and C(a + b, c) past the
    last valid c_a, so a search for "the last c_a with offset <= rank" finds the right one."""
    width = _WIDTH[a]
    i = np.arange(width)
    left = np.where(i <= a, BINOM[a, np.minimum(i, a)], 0)  # C(a, i)
    b = np.arange(a + 1)[:, None, None]
    j = np.arange(2 * a + 1)[None, :, None] - i  # c - i
    right = np.where((j >= 0) & (j <= b), BINOM[b, np.clip(j, 0, a)], 0)  # C(b, c - i)
    table = np.zeros((a + 1, 2 * a + 1, width), np.uint64)
    table[..., 1:] = np.cumsum((left * right)[..., :-1], axis=-1, dtype=np.uint64)
    return table.ravel()


def _join(
    count_a: np.ndarray,
    rank_a: np.ndarray,
    count_b: np.ndarray,
    rank_b: np.ndarray,
    b: np.ndarray,
    a: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(count, rank) of nodes from their children's."""
    count = count_a + count_b
    at = (b * (2 * a + 1) + count) * _WIDTH[a] + count_a
    return count, _offsets(a)[at] + rank_a * BINOM[b, count_b] + rank_b


_GUIDE = 64  # guide buckets per (b, c) row of offsets


@functools.cache
def _guide(a: int) -> tuple[np.ndarray, np.ndarray]:
    """(a first guess at c_a for each of _GUIDE equal slices of each (b, c) row's ranks, the
    row's total C(a + b, c) as a float): computed in float64, so only a guess, which
    ``_split`` then corrects exactly."""
    width = _WIDTH[a]
    offsets = _offsets(a).reshape(-1, width).astype(np.float64)
    totals = np.maximum(offsets[:, -1], 1.0)
    slices = np.minimum(offsets / totals[:, None] * _GUIDE, _GUIDE).astype(np.int64)
    starting = np.zeros((len(offsets), _GUIDE + 1), np.int64)
    np.add.at(starting, (np.arange(len(offsets))[:, None], slices), 1)
    guide = np.cumsum(starting, axis=1)[:, :_GUIDE] - 1  # the last c_a starting at or below
    return np.maximum(guide, 0).ravel(), totals


def _split(
    count: np.ndarray, rank: np.ndarray, b: np.ndarray, a: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(count_a, rank_a, count_b, rank_b) of nodes whose ranks are valid for their counts.

    count_a is the last c_a with offset <= rank: guessed from the slice of the row its rank
    falls in (``_guide``), then stepped down or up until exact, on the nodes still off (a
    guess is rarely more than one off; each step shrinks the set, at most ``a`` steps)."""
    table, width = _offsets(a), _WIDTH[a]
    guide, totals = _guide(a)
    row = b * (2 * a + 1) + count
    base = row * width
    slice_of = (rank.astype(np.float64) * (_GUIDE / totals[row])).astype(np.int64)
    count_a = guide[row * _GUIDE + np.minimum(slice_of, _GUIDE - 1)]
    off = np.flatnonzero(table[base + count_a] > rank)
    while len(off):
        count_a[off] -= 1
        off = off[table[base[off] + count_a[off]] > rank[off]]
    off = np.flatnonzero(table[base + count_a + 1] <= rank)
    while len(off):
        count_a[off] += 1
        off = off[table[base[off] + count_a[off] + 1] <= rank[off]]
    rest = rank - table[base + count_a]
    count_b = count - count_a
    radix = BINOM[b, count_b]
    rank_a = rest // radix
    return count_a, rank_a, count_b, rest - rank_a * radix


def _child_lengths(length: np.ndarray, a: int) -> np.ndarray:
    """Length of the right child of nodes of ``length`` entries whose left child holds a."""
    return np.clip(length - a, 0, a)


def rank_blocks(blocks: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept count, rank) of each row of the (B, 64) bool ``blocks``, zero past ``lengths``."""
    popcount, leaf_rank, _, _ = _leaf_tables()
    leaves = np.packbits(blocks, axis=1, bitorder="little").view("<u2")  # (B, 4)
    counts = popcount[leaves].astype(np.int64)
    ranks = leaf_rank[leaves].astype(np.uint64)
    half_len = np.stack([np.minimum(lengths, HALF), _child_lengths(lengths, HALF)], axis=1)
    half_count, half_rank = _join(
        counts[:, 0::2],
        ranks[:, 0::2],
        counts[:, 1::2],
        ranks[:, 1::2],
        _child_lengths(half_len, LEAF),
        LEAF,
    )
    return _join(
        half_count[:, 0],
        half_rank[:, 0],
        half_count[:, 1],
        half_rank[:, 1],
        _child_lengths(lengths, HALF),
        HALF,
    )


def unrank_blocks(counts: np.ndarray, ranks: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The (B, 64) bool blocks of ``counts`` (<= lengths) and ``ranks`` (< C(length, count)),
    zero past each block's length: the inverse of ``rank_blocks``."""
    _, _, by_count, starts = _leaf_tables()
    counts = counts.astype(np.int64)
    left_count, left_rank, right_count, right_rank = _split(
        counts, ranks.astype(np.uint64), _child_lengths(lengths, HALF), HALF
    )
    half_len = np.stack([np.minimum(lengths, HALF), _child_lengths(lengths, HALF)], axis=1)
    quarter = _split(
        np.stack([left_count, right_count], axis=1).ravel(),
        np.stack([left_rank, right_rank], axis=1).ravel(),
        _child_lengths(half_len, LEAF).ravel(),
        LEAF,
    )
    leaf_count = np.stack([quarter[0], quarter[2]], axis=1).ravel()
    leaf_rank = np.stack([quarter[1], quarter[3]], axis=1).ravel().astype(np.int64)
    leaves = by_count[starts[leaf_count] + leaf_rank].astype("<u2")
    bits = np.unpackbits(leaves.view(np.uint8), bitorder="little")
    return bits.reshape(len(counts), BLOCK).view(bool)
