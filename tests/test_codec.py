from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedticket.wire import codec
from fedticket.wire.buffer import varint
from fedticket.wire.codec import PayloadError, Scheme


def _mask(rng: np.random.Generator, shape: tuple[int, ...], d: float) -> np.ndarray:
    return rng.random(shape) < d


@pytest.mark.parametrize("n", [10_000, 50_000, 200_000])
@pytest.mark.parametrize("d", [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.38, 0.45, 0.5])
def test_iid_mask_positions_are_near_the_entropy_bound(n: int, d: float) -> None:
    mask = _mask(np.random.default_rng(int(d * 1000) + n), (n,), d)
    buf = codec.encode_mask(mask)
    info = codec.inspect(buf)
    limit = 1.02 if n >= 100_000 else 1.05
    assert info.position_bytes * 8 <= limit * codec.entropy_bound_bits(mask) + 8
    assert info.header_bytes <= 32
    assert np.array_equal(codec.decode_mask(buf), mask)


def test_smallest_bound_case_fits_in_the_budget() -> None:
    mask = _mask(np.random.default_rng(1), (10_000,), 0.01)
    buf = codec.encode_mask(mask)
    bound_bytes = codec.entropy_bound_bits(mask) / 8
    assert len(buf) <= 1.05 * bound_bytes + 32


def test_rows_of_different_density_code_below_the_global_bound() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((64, 576)) < np.linspace(0.005, 0.5, 64)[:, None]
    buf = codec.encode_mask(mask)
    info = codec.inspect(buf)
    assert info.scheme == Scheme.ENUM_ROWS
    assert info.position_bytes * 8 < 0.95 * codec.entropy_bound_bits(mask)
    assert np.array_equal(codec.decode_mask(buf), mask)


def test_hand_computed_buffer_layout_for_a_dense_tensor() -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    buf = codec.encode_tensor(values)
    # magic, version 2, scheme FULL, dtype float32, ndim 2, dims 2 and 3, count 6, 0 position
    # bytes, parameter 0, crc32, then 6 float32 values
    header = bytes([0xF7, 2, Scheme.FULL, 1, 2, 2, 3, 6, 0, 0])
    body = values.astype("<f4").tobytes()
    crc = struct.pack("<I", zlib.crc32(body, zlib.crc32(header)))
    assert buf == header + crc + body
    assert len(buf) == 14 + 24


def test_known_mask_costs_no_position_bytes_and_checks_the_mask() -> None:
    rng = np.random.default_rng(2)
    values = rng.standard_normal((40, 30)).astype(np.float32)
    mask = _mask(rng, values.shape, 0.2)
    buf = codec.encode_tensor(values, mask, send_mask=False)
    info = codec.inspect(buf)
    assert info.scheme == Scheme.KNOWN and info.position_bytes == 0
    assert info.value_bytes == 4 * int(mask.sum())
    dense, got = codec.decode_tensor(buf, mask)
    assert np.array_equal(dense, np.where(mask, values, 0)) and np.array_equal(got, mask)
    with pytest.raises(PayloadError, match="pass the mask"):
        codec.decode_tensor(buf)
    other = mask.copy()  # same count, one kept entry moved: only the mask check can tell
    kept, pruned = np.flatnonzero(mask)[0], np.flatnonzero(~mask)[0]
    other.flat[kept], other.flat[pruned] = False, True
    with pytest.raises(PayloadError, match="stale mask"):
        codec.decode_tensor(buf, other)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_values_round_to_nearest(dtype: str) -> None:
    values = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
    dense, _ = codec.decode_tensor(codec.encode_tensor(values, value_dtype=dtype))
    tolerance = 2**-11 if dtype == "float16" else 2**-8
    assert np.all(np.abs(dense - values) <= tolerance * np.abs(values) + 1e-7)


def test_compression_is_lossless_and_only_used_when_smaller() -> None:
    rng = np.random.default_rng(4)
    values = np.round(rng.standard_normal(5000), 1).astype(np.float32)  # few distinct values
    mask = _mask(rng, values.shape, 0.3)
    plain = codec.encode_tensor(values, mask)
    packed = codec.encode_tensor(values, mask, compression="zlib")
    assert len(packed) < len(plain)
    assert np.array_equal(codec.decode_tensor(packed)[0], codec.decode_tensor(plain)[0])
    noise = rng.standard_normal(100).astype(np.float32)
    assert codec.inspect(codec.encode_tensor(noise, compression="lzma")).compression == "none"


def test_integer_buffers_travel_in_their_own_dtype() -> None:
    counter = np.array(12345678901, dtype=np.int64)
    dense, _ = codec.decode_tensor(codec.encode_tensor(counter))
    assert dense.dtype == np.int64 and dense == counter


# ------------------------------------------------------------------ bad input
def test_hostile_header_claiming_a_trillion_entries_is_refused_before_allocating() -> None:
    header = (
        bytes([0xF7, codec.FORMAT_VERSION, Scheme.FULL, 1, 1])
        + varint(10**12)
        + varint(10**12)
        + b"\x00\x00"
    )
    buf = header + struct.pack("<I", zlib.crc32(header))
    with pytest.raises(PayloadError, match="more than the limit"):
        codec.decode_tensor(buf, name="fc1.weight")


@pytest.mark.parametrize(
    ("buf", "fault"),
    [
        (b"", "too short"),
        (b"\x00" * 40, "bad magic"),
        (bytes([0xF7, 9, 1, 1, 0]) + b"\x00" * 10, "format version 9"),
        (bytes([0xF7, codec.FORMAT_VERSION, 42, 1, 0]) + b"\x00" * 10, "unknown position scheme"),
        (bytes([0xF7, codec.FORMAT_VERSION, 1, 1, 200]), "dimensions"),
    ],
)
def test_garbage_names_the_tensor_and_the_fault(buf: bytes, fault: str) -> None:
    with pytest.raises(PayloadError, match=fault) as err:
        codec.decode_tensor(buf, name="conv1.weight")
    assert "conv1.weight" in str(err.value)


def test_truncation_and_bit_flips_are_caught() -> None:
    rng = np.random.default_rng(5)
    values = rng.standard_normal((20, 50)).astype(np.float32)
    buf = codec.encode_tensor(values, _mask(rng, values.shape, 0.1))
    for cut in range(len(buf)):
        with pytest.raises(PayloadError):
            codec.decode_tensor(buf[:cut])
    for i in range(len(buf)):
        flipped = bytearray(buf)
        flipped[i] ^= 1 << (i % 8)
        with pytest.raises(PayloadError):
            codec.decode_tensor(bytes(flipped))


def test_expected_shape_rejects_a_wrong_tensor() -> None:
    buf = codec.encode_tensor(np.zeros((3, 4), np.float32))
    with pytest.raises(PayloadError, match="differs from the expected"):
        codec.decode_tensor(buf, expected_shape=(4, 3))


# ------------------------------------------------------------------ properties
shapes = st.lists(st.integers(1, 40), min_size=1, max_size=3).map(tuple)


@settings(max_examples=150, deadline=None)
@given(
    shape=shapes,
    density=st.sampled_from([0.0, 0.01, 0.1, 0.38, 0.5, 0.9, 1.0]),
    dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
    send_mask=st.booleans(),
    compression=st.sampled_from(["none", "zlib"]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_is_exact(shape, density, dtype, send_mask, compression, seed) -> None:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(np.float32)
    mask = rng.random(shape) < density
    buf = codec.encode_tensor(
        values, mask, send_mask=send_mask, value_dtype=dtype, compression=compression
    )
    dense, got = codec.decode_tensor(buf, None if send_mask else mask, expected_shape=shape)
    assert np.array_equal(got, mask)
    assert np.all(dense[~mask] == 0)
    if dtype == "float32":
        assert np.array_equal(dense[mask].view(np.uint32), values[mask].view(np.uint32))
    assert np.array_equal(codec.decode_mask(codec.encode_mask(mask)), mask)


@settings(max_examples=300, deadline=None)
@given(
    shape=shapes,
    density=st.sampled_from([0.05, 0.3, 0.5, 0.95]),
    seed=st.integers(0, 2**16),
    corruption=st.sampled_from(["flip", "truncate", "extend", "random", "splice"]),
    where=st.floats(0, 1),
)
def test_corruption_is_caught_or_decodes_to_a_valid_tensor(
    shape, density, seed, corruption, where
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(np.float32)
    buf = bytearray(codec.encode_tensor(values, rng.random(shape) < density))
    i = min(int(where * len(buf)), len(buf) - 1)
    if corruption == "flip":
        buf[i] ^= 1 << (seed % 8)
    elif corruption == "truncate":
        buf = buf[:i]
    elif corruption == "extend":
        buf += bytes([seed % 256])
    elif corruption == "random":
        buf = bytearray(rng.integers(0, 256, len(buf), dtype=np.uint8).tobytes())
    else:
        buf[i:] = rng.integers(0, 256, len(buf) - i, dtype=np.uint8).tobytes()
    try:
        dense, mask = codec.decode_tensor(bytes(buf))
    except PayloadError:
        return
    # a decode that succeeds has passed the checksum and yields a consistent tensor
    assert dense.shape == mask.shape and np.all(dense[~mask] == 0)
