"""The decoders on hostile input (issue #19, codec): every bad buffer or payload gives back the
original, a valid decode of what it says, or a ``PayloadError``, in bounded time and memory.

The cases come from the ``benchmarks.payload_fuzz`` modules (valid buffers and payloads from the
encoder, one mutation each, the checksum recomputed so that the mutation reaches the decoder's
logic): here the fuzz helpers themselves, the properties, and the benchmark itself (the slow
test runs 2,000 of its cases). One closed-form test per reported fault:
``test_codec_fuzz_buffers.py`` (one buffer) and ``test_codec_fuzz_payloads.py`` (payloads).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.payload_fuzz_inputs import recode_positions
from benchmarks.payload_fuzz_mutations import BUFFER_KINDS, crc_offset, mutate_buffer, reseal
from benchmarks.payload_fuzz_payloads import PAYLOAD_KINDS
from benchmarks.payload_fuzz_run import (
    FAILURES,
    MEMORY_LIMIT_BYTES,
    TIME_LIMIT_S,
    make_case,
    run_case,
)
from fedticket.wire import codec
from fedticket.wire.codec import PayloadError, Scheme
from tests.codec_fuzz_helpers import POSITION_SCHEMES, sealed, traced_call

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)


def _assert_fine(row: dict) -> None:
    assert row["outcome"] not in FAILURES, row
    assert row["seconds"] < TIME_LIMIT_S, row
    assert row["peak_bytes"] < MEMORY_LIMIT_BYTES, row


# ------------------------------------------------------------------ the fuzz helpers themselves
def test_reseal_leaves_a_valid_buffer_alone_and_fixes_a_mutated_checksum() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((30, 70)) < 0.2
    buf = codec.encode_tensor(rng.standard_normal(mask.shape), mask, send_mask=False)
    assert reseal(buf) == buf and crc_offset(buf) == codec.inspect(buf).header_bytes - 4
    flipped = bytearray(buf)
    flipped[-1] ^= 0x10
    with pytest.raises(PayloadError, match="checksum"):
        codec.decode_tensor(bytes(flipped), mask)
    dense, _ = codec.decode_tensor(reseal(bytes(flipped)), mask)  # reaches the values now
    assert dense.shape == mask.shape


def test_recoded_positions_decode_to_the_same_mask_under_every_scheme() -> None:
    rng = np.random.default_rng(1)
    mask = rng.random((12, 130)) < np.linspace(0.01, 0.9, 12)[:, None]
    buf = codec.encode_mask(mask)
    for scheme in POSITION_SCHEMES:
        for invert in (False, True):
            recoded = recode_positions(buf, mask, scheme, invert)
            assert codec.inspect(recoded).scheme == scheme
            assert np.array_equal(codec.decode_mask(recoded), mask)


def test_hand_written_headers_match_the_encoder() -> None:
    buf = codec.encode_tensor(np.arange(3, dtype=np.float32))
    hand = sealed(Scheme.FULL, 1, (3,), 3, np.arange(3, dtype="<f4").tobytes())
    assert hand == buf and struct.unpack_from("<I", buf, 9)[0] == zlib.crc32(
        buf[13:], zlib.crc32(buf[:9])
    )


# ------------------------------------------------------------------ properties
@FUZZ
@given(target=st.sampled_from(["mask", "tensor"]), kind=st.sampled_from(BUFFER_KINDS), seed=seeds)
def test_a_mutated_buffer_decodes_to_the_original_or_raises_payload_error(target, kind, seed):
    _assert_fine(run_case(make_case(np.random.default_rng(seed), target, kind)))


@FUZZ
@given(kind=st.sampled_from(BUFFER_KINDS + PAYLOAD_KINDS), seed=seeds)
def test_a_mutated_payload_decodes_to_the_original_or_raises_payload_error(kind, seed):
    _assert_fine(run_case(make_case(np.random.default_rng(seed), "payload", kind)))


@settings(max_examples=150, deadline=None)
@given(
    shape=st.lists(st.integers(1, 70), min_size=1, max_size=3).map(tuple),
    pattern=st.sampled_from(["one", "all-but-one", "blocks", "half", "tail", "iid"]),
    scheme=st.sampled_from(POSITION_SCHEMES),
    invert=st.booleans(),
    seed=seeds,
)
def test_the_size_bounds_never_refuse_what_the_encoder_writes(shape, pattern, scheme, invert, seed):
    """Extreme masks (the fewest and the most position bits a scheme can need) under every
    scheme, coded on purpose even where the encoder would pick another."""
    n = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    flat = np.zeros(n, bool)
    if pattern == "one":
        flat[rng.integers(n)] = True
    elif pattern == "all-but-one":
        flat[:] = True
        flat[rng.integers(n)] = False
    elif pattern == "blocks":  # whole 64-blocks kept or pruned: counts only, no ranks
        flat = (np.arange(n) // 64) % 2 == 0
    elif pattern == "half":
        flat[: n // 2] = True
    elif pattern == "tail":
        flat[-max(1, n // 50) :] = True
    else:
        flat = rng.random(n) < rng.random()
    mask = flat.reshape(shape)
    if not 0 < mask.sum() < n or (scheme == Scheme.ENUM_ROWS and mask.ndim < 2):
        return
    buf = recode_positions(codec.encode_mask(mask), mask, scheme, invert)
    assert np.array_equal(codec.decode_mask(buf), mask)


@pytest.mark.parametrize("scheme", POSITION_SCHEMES, ids=lambda s: s.name)
@pytest.mark.parametrize("density", [0.02, 0.3, 0.97])
def test_large_tensors_round_trip_across_the_decoders_chunks(scheme, density) -> None:
    """1.1M entries: several Golomb windows, ENUM count and rank batches, inflate pieces."""
    rng = np.random.default_rng(int(density * 100))
    mask = rng.random((1024, 1100)) < density
    values = np.round(rng.standard_normal(mask.shape), 2).astype(np.float32)
    buf = codec.encode_tensor(values, mask, compression="zlib")
    buf = recode_positions(buf, mask, scheme, invert=density > 0.5)
    dense, got = codec.decode_tensor(buf)
    assert np.array_equal(got, mask)
    assert np.array_equal(dense, np.where(mask, values, 0))


def test_more_row_counts_than_one_batch_round_trip() -> None:
    mask = np.random.default_rng(8).random((70_000, 3)) < 0.5
    buf = recode_positions(codec.encode_mask(mask), mask, Scheme.ENUM_ROWS, False)
    assert np.array_equal(codec.decode_mask(buf), mask)


# ------------------------------------------------------------------ the same through the bench
def test_a_header_varint_rewritten_to_a_claim_at_the_limit_decodes_in_bounds() -> None:
    """The mutation that found the faults: one dimension as large as the default limit
    allows. The decode refuses it or returns a valid (large) mask, within the limits."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        mask = rng.random((8, 65)) < 0.4
        buf = recode_positions(codec.encode_mask(mask), mask, Scheme.ENUM, False)
        bad = mutate_buffer(buf, "varint", rng)
        peak, seconds, error = traced_call(lambda bad=bad: codec.decode_mask(bad))
        assert error is None or isinstance(error, PayloadError)
        assert seconds < TIME_LIMIT_S and peak < MEMORY_LIMIT_BYTES


@pytest.mark.slow
def test_two_thousand_benchmark_cases_find_nothing(tmp_path) -> None:
    import pandas as pd

    from benchmarks.payload_fuzz import main

    assert main(["--cases", "2000", "--seed", "1", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "payload_fuzz.csv").set_index(["target", "kind"])
    total = table.loc[("all", "all")]
    assert total["cases"] == 2000 and total["errors"] > 0 and total["ok"] > 0
    assert total[["other_exceptions", "silently_wrong", "valid_rejected"]].sum() == 0
    assert total["max_seconds"] < TIME_LIMIT_S and total["max_MB"] < MEMORY_LIMIT_BYTES / 2**20
    assert (tmp_path / "payload_fuzz.md").exists()
