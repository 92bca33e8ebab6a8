"""Positions: which entries of a tensor a mask keeps, coded with the smallest scheme for it.

* ``BITMAP``: 1 bit per entry (best near d = 0.5).
* ``GOLOMB``: Golomb-coded gaps between kept entries, or between pruned ones when d > 0.5
  (``golomb``).
* ``ENUM``: enumerative coding of 64-entry blocks (``enumerative``).
* ``ENUM_ROWS``: the same per output channel (row), with each row's count sent: real pruned
  layers have rows of very different density, and coding each row at its own density goes
  below the global n*H(d).
* ``KNOWN`` (the receiver already holds the mask: 0 position bytes), ``FULL`` (dense:
  density 1) and ``EMPTY``.

Also here: the entropy bounds the schemes are measured against, and the fewest and most bits
each scheme can need, which decoding checks a header against before it allocates anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from fedticket.wire.bits import BitReader
from fedticket.wire.enumerative import (
    BLOCK,
    HUFFMAN_MAX_BITS,
    RANK_MAX_BITS,
    EnumFields,
    enum_decode,
    enum_fields,
    enum_size_bits,
)
from fedticket.wire.errors import PayloadError
from fedticket.wire.golomb import (
    best_golomb,
    gaps_between,
    golomb_decode,
    golomb_encode,
    kept_gaps,
)


class Scheme(IntEnum):
    KNOWN = 0
    FULL = 1
    EMPTY = 2
    BITMAP = 3
    GOLOMB = 4
    ENUM = 5
    ENUM_ROWS = 6


def binary_entropy(d: float) -> float:
    """H(d) in bits."""
    if d <= 0.0 or d >= 1.0:
        return 0.0
    return -d * math.log2(d) - (1 - d) * math.log2(1 - d)


def entropy_bound_bits(mask: np.ndarray) -> float:
    """n * H(d): the i.i.d. lower bound on the positions of a mask with density d."""
    n = mask.size
    return n * binary_entropy(np.count_nonzero(mask) / n) if n else 0.0


def row_entropy_bound_bits(mask: np.ndarray) -> float:
    """Sum over output channels (rows) of len * H(d_row): the bound for per-row coding."""
    if mask.ndim < 2:
        return entropy_bound_bits(mask)
    rows = mask.reshape(mask.shape[0], -1)
    length = rows.shape[1]
    return float(sum(length * binary_entropy(k / length) for k in rows.sum(axis=1).tolist()))


@dataclass(frozen=True)
class Choice:
    """A scheme for a mask, the bits it codes the positions in, and its parameter; for the
    enumerative schemes also the fields that were sized, so encoding does not redo them."""

    scheme: Scheme
    bits: int
    param: int = 0
    fields: EnumFields | None = field(default=None, compare=False, repr=False)


def position_candidates(mask: np.ndarray) -> dict[str, int]:
    """Size in bits of every applicable position scheme for ``mask`` (for reports)."""
    flat = mask.reshape(-1)
    n, k = flat.size, np.count_nonzero(flat)
    sizes = {"bitmap": n}
    for invert in (False, True):
        gaps = kept_gaps(~flat if invert else flat)
        sizes["golomb-inverted" if invert else "golomb"] = best_golomb(gaps, n)[0]
    if 0 < k < n:
        sizes["enum"] = enum_size_bits(flat.reshape(1, -1), with_row_counts=False)
        if mask.ndim >= 2 and mask.shape[0] > 1:
            sizes["enum-rows"] = enum_size_bits(
                mask.reshape(mask.shape[0], -1), with_row_counts=True
            )
    return sizes


def choose(mask: np.ndarray, kept_at: np.ndarray | None = None) -> Choice:
    """The smallest scheme for ``mask``: Golomb or bitmap, then enumerative where Golomb is
    off the entropy bound, and per-row enumerative where the rows' bound is lower.
    ``kept_at``: the kept entries' flat indices, if the caller has them already."""
    flat = mask.reshape(-1)
    n, k = flat.size, np.count_nonzero(flat)
    if k == n:
        return Choice(Scheme.FULL, 0)
    if k == 0:
        return Choice(Scheme.EMPTY, 0)
    invert = k > n - k
    if invert or kept_at is None:
        kept_at = np.flatnonzero(~flat if invert else flat)
    bits, m = best_golomb(gaps_between(kept_at), n)
    best = Choice(Scheme.GOLOMB, bits, (m << 1) | int(invert))
    if n < best.bits:
        best = Choice(Scheme.BITMAP, n)
    bound = entropy_bound_bits(flat)
    if best.bits > 1.01 * bound + 64:  # Golomb is off the bound (d near 0.38): try enumerative
        fields = enum_fields(flat.reshape(1, -1), with_row_counts=False)
        if fields.bits < best.bits:
            best = Choice(Scheme.ENUM, fields.bits, fields=fields)
    if mask.ndim >= 2 and mask.shape[0] > 1 and row_entropy_bound_bits(mask) < 0.99 * bound:
        fields = enum_fields(mask.reshape(mask.shape[0], -1), with_row_counts=True)
        if fields.bits < best.bits:
            best = Choice(Scheme.ENUM_ROWS, fields.bits, fields=fields)
    return best


def encode_positions(mask: np.ndarray, choice: Choice) -> bytes:
    """The position section of ``mask`` in the scheme of ``choice`` (padded to whole bytes)."""
    flat = mask.reshape(-1)
    if choice.scheme in (Scheme.FULL, Scheme.EMPTY, Scheme.KNOWN):
        return b""
    if choice.scheme == Scheme.BITMAP:
        return np.packbits(flat).tobytes()
    if choice.scheme == Scheme.GOLOMB:
        invert = bool(choice.param & 1)
        bits = golomb_encode(kept_gaps(~flat if invert else flat), choice.param >> 1)
        return np.packbits(bits).tobytes()
    fields = choice.fields
    if fields is None:
        rows = flat.reshape(1, -1) if choice.scheme == Scheme.ENUM else mask.reshape(len(mask), -1)
        fields = enum_fields(rows, with_row_counts=choice.scheme == Scheme.ENUM_ROWS)
    return fields.pack()


def check_positions(
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


def decode_positions(
    section: memoryview, scheme: Scheme, shape: tuple[int, ...], count: int, param: int, name: str
) -> np.ndarray:
    """The flat mask; ``check_positions`` has bounded the section against the header."""
    n = math.prod(shape)
    if scheme == Scheme.FULL:
        return np.ones(n, bool)
    if scheme == Scheme.EMPTY:
        return np.zeros(n, bool)
    if scheme == Scheme.BITMAP:
        packed = np.frombuffer(section, np.uint8)
        if n % 8 and packed[-1] & ((1 << (8 - n % 8)) - 1):
            raise PayloadError(f"tensor '{name}': bitmap padding bits are set")
        flat = np.unpackbits(packed, count=n).view(bool)
        kept = int(np.count_nonzero(flat))
        if kept != count:
            raise PayloadError(f"tensor '{name}': bitmap keeps {kept} entries, header says {count}")
        return flat
    reader = BitReader(section, name)
    if scheme == Scheme.GOLOMB:
        invert, m = bool(param & 1), param >> 1
        flat = np.zeros(n, bool)
        golomb_decode(reader, n - count if invert else count, m, flat)
        reader.finish()
        return np.logical_not(flat, out=flat) if invert else flat
    if scheme == Scheme.ENUM_ROWS:
        num_rows = shape[0]
        length = n // num_rows
        row_kept = reader.fixed(num_rows, length.bit_length(), "row counts").view(np.int64)
        if np.any(row_kept > length) or int(row_kept.sum()) != count:
            raise PayloadError(
                f"tensor '{name}': row counts do not add up to the kept count {count}"
            )
    else:
        num_rows, length, row_kept = 1, n, np.array([count], np.int64)
    flat = enum_decode(reader, num_rows, length, row_kept)
    reader.finish()
    return flat
