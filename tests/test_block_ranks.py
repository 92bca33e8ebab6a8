"""The enumerative coder's pieces (issue #24, codec): block ranks by halves are a bijection onto
[0, C(len, c)) for every length and count, the word-at-a-time field packer writes the same
stream as the bit-by-bit one, and the block-count decoder's short first span falls back to the
full bound when a mask's codes are longer than its density suggests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.payload_fuzz_inputs import recode_positions
from fedticket.wire import codec, enumerative
from fedticket.wire.bits import pack_fields
from fedticket.wire.block_ranks import BINOM, BLOCK, rank_blocks, unrank_blocks
from fedticket.wire.codec import Scheme
from fedticket.wire.enumerative import HUFFMAN_MAX_BITS, count_code


def _every_pattern(length: int) -> np.ndarray:
    return ((np.arange(1 << length)[:, None] >> np.arange(BLOCK)) & 1).astype(bool)


@pytest.mark.parametrize("length", [1, 2, 3, 7, 15, 16, 17, 20])
def test_every_pattern_of_a_short_block_gets_a_distinct_rank_below_the_binomial(length) -> None:
    patterns = _every_pattern(length)
    lengths = np.full(len(patterns), length)
    counts, ranks = rank_blocks(patterns, lengths)
    assert np.array_equal(counts, patterns.sum(axis=1))
    for c in range(length + 1):
        assert np.array_equal(np.sort(ranks[counts == c]), np.arange(math.comb(length, c)))
    assert np.array_equal(unrank_blocks(counts, ranks, lengths), patterns)


@pytest.mark.parametrize("length", [32, 33, 47, 48, 63, 64])
def test_first_middle_and_last_ranks_of_every_count_round_trip(length) -> None:
    for c in range(length + 1):
        total = math.comb(length, c)
        ranks = np.array(sorted({0, 1 % total, total // 3, total // 2, total - 1}), np.uint64)
        blocks = unrank_blocks(np.full(len(ranks), c), ranks, np.full(len(ranks), length))
        assert np.all(blocks.sum(axis=1) == c) and not blocks[:, length:].any()
        again = rank_blocks(blocks, np.full(len(ranks), length))
        assert np.array_equal(again[0], np.full(len(ranks), c))
        assert np.array_equal(again[1], ranks)


def test_single_entry_ranks_in_closed_form() -> None:
    """c = 1 at length 64: nodes order by their left child's count, so at each level the
    patterns with the entry in the right child (c_a = 0) come first. Entry p of a half ranks
    (p + 16) % 32 there; the block's rank is that, plus 32 when the entry is in the left half."""
    blocks = np.eye(BLOCK, dtype=bool)
    counts, ranks = rank_blocks(blocks, np.full(BLOCK, BLOCK))
    position = np.arange(BLOCK)
    in_half = (position % 32 + 16) % 32
    assert np.array_equal(counts, np.ones(BLOCK))
    assert np.array_equal(ranks, np.where(position < 32, 32 + in_half, in_half))


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(1, BLOCK),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_blocks_round_trip_with_ranks_in_range(length, density, seed) -> None:
    rng = np.random.default_rng(seed)
    blocks = rng.random((64, BLOCK)) < density
    blocks[:, length:] = False
    lengths = np.full(len(blocks), length)
    counts, ranks = rank_blocks(blocks, lengths)
    assert np.all(ranks < BINOM[length, counts])
    assert np.array_equal(unrank_blocks(counts, ranks, lengths), blocks)


@settings(max_examples=300, deadline=None)
@given(
    widths=st.lists(st.integers(0, 64), max_size=120),
    seed=st.integers(0, 2**32 - 1),
)
def test_packed_fields_equal_the_bit_by_bit_stream(widths, seed) -> None:
    rng = np.random.default_rng(seed)
    widths = np.array(widths, np.int64)
    values = rng.integers(0, 2**64, len(widths), dtype=np.uint64, endpoint=False)
    # the reference: each value's low ``width`` bits as a string of 0s and 1s, padded to bytes
    pairs = zip(values.tolist(), widths.tolist(), strict=True)
    bits = "".join(format(v, "064b")[64 - w :] if w else "" for v, w in pairs)
    bits += "0" * (-len(bits) % 8)
    expected = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
    assert pack_fields(values, widths) == expected


def test_block_counts_longer_than_the_density_suggests_decode_over_the_full_bound(
    monkeypatch,
) -> None:
    """Blocks alternately empty and full give d = 0.5, but every count code is one of the
    level's longest, far past the span the i.i.d. guess allows: the decoder falls back."""
    lengths, _ = count_code(512)
    assert lengths[0] == lengths[64] == lengths.max() == HUFFMAN_MAX_BITS
    mask = np.zeros((1 << 14, BLOCK), bool)
    mask[::2] = True
    mask = mask.ravel()
    buf = recode_positions(codec.encode_mask(mask), mask, Scheme.ENUM, False)
    outcomes = []
    one_level = enumerative._one_level

    def spy(*args):
        decoded, used = one_level(*args)
        outcomes.append(decoded is not None)
        return decoded, used

    monkeypatch.setattr(enumerative, "_one_level", spy)
    assert codec.inspect(buf).scheme == Scheme.ENUM
    assert np.array_equal(codec.decode_mask(buf), mask)
    assert False in outcomes and outcomes[-1]
