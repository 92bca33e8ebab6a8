"""The faults reported in issue #19 for one codec buffer, one closed-form test each: sizes a
header claims, compressed values, zero dimensions, trailing bytes, limits and work. Every one
is refused with a ``PayloadError`` (or decodes) in bounded time and memory."""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest

from benchmarks.payload_fuzz_inputs import recode_positions
from benchmarks.payload_fuzz_mutations import reseal
from benchmarks.payload_fuzz_run import MEMORY_LIMIT_BYTES, TIME_LIMIT_S
from fedticket.wire import codec
from fedticket.wire.codec import PayloadError, Scheme
from fedticket.wire.enumerative import count_code, count_table
from fedticket.wire.values import MAX_EXPANSION
from tests.codec_fuzz_helpers import POSITION_SCHEMES, sealed, sealed_positions, traced_call


# ------------------------------------------------------------------ 1: sizes a header claims
@pytest.mark.parametrize("position_bytes", range(9))
def test_an_enum_buffer_claiming_2_30_entries_is_refused_at_once(position_bytes) -> None:
    """21-29 bytes claiming 2**30 entries took 0.5-3.3 s and 0.85-1.36 GB to refuse."""
    positions = b"\xff" * position_bytes
    buf = sealed_positions(Scheme.ENUM, (1 << 30,), 1 << 29, positions)
    assert 21 <= len(buf) <= 29
    for limit in (codec.DEFAULT_MAX_ENTRIES, 1 << 30):  # the limit, then the ENUM bound
        peak, seconds, error = traced_call(
            lambda limit=limit: codec.decode_mask(buf, max_entries=limit)
        )
        assert isinstance(error, PayloadError) and seconds < 0.05 and peak < 100_000
    with pytest.raises(PayloadError, match="cannot code this ENUM mask"):
        codec.decode_mask(buf, max_entries=1 << 30)


@pytest.mark.parametrize(
    ("scheme", "shape", "count", "param"),
    [
        (Scheme.BITMAP, (1 << 30,), 5, 0),
        (Scheme.GOLOMB, (1 << 30,), 1 << 29, 2 << 1),  # 2**29 codes of >= 2 bits each
        (Scheme.GOLOMB, (1 << 30,), 1 << 29, (2 << 1) | 1),  # inverted
        (Scheme.ENUM_ROWS, (1 << 15, 1 << 15), 1 << 29, 0),  # 2**15 row counts of 16 bits
        (Scheme.ENUM, (1 << 20,), 7, 0),
    ],
)
def test_every_position_scheme_checks_its_claim_before_allocating(scheme, shape, count, param):
    buf = sealed_positions(scheme, shape, count, b"\x00" * 16, param)
    peak, seconds, error = traced_call(lambda: codec.decode_mask(buf, max_entries=1 << 30))
    assert isinstance(error, PayloadError) and "cannot code" in str(error)
    assert seconds < 0.05 and peak < 100_000


def test_a_position_section_larger_than_any_encoding_is_refused_before_unpacking() -> None:
    buf = sealed_positions(Scheme.GOLOMB, (100,), 3, bytes(1 << 20), 4 << 1)
    peak, _, error = traced_call(lambda: codec.decode_mask(buf))
    assert isinstance(error, PayloadError) and peak < 100_000


def test_bitmap_padding_bits_must_be_zero() -> None:
    mask = np.zeros(13, bool)
    mask[[0, 5]] = True
    positions = bytearray(np.packbits(mask).tobytes())
    assert codec.decode_mask(sealed_positions(Scheme.BITMAP, (13,), 2, bytes(positions)))[5]
    positions[-1] |= 1  # a padding bit: the same 13 entries, another buffer
    with pytest.raises(PayloadError, match="padding"):
        codec.decode_mask(sealed_positions(Scheme.BITMAP, (13,), 2, bytes(positions)))


# ------------------------------------------------------------------ 2: compressed values
def test_a_tiny_zlib_buffer_claiming_2_30_values_is_refused_before_allocating() -> None:
    """33 bytes, FULL + zlib, claiming 2**30 float32 values: np.ones(2**30) (1 GiB) used to come
    before the decompression that fails."""
    stream = zlib.compress(bytes(10))
    full_zlib = codec.VALUE_DTYPES["float32"] | codec.COMPRESSIONS["zlib"] << 4
    buf = sealed(Scheme.FULL, full_zlib, (1 << 30,), 1 << 30, stream)
    assert len(buf) <= 33
    peak, seconds, error = traced_call(lambda: codec.decode_tensor(buf, max_entries=1 << 30))
    assert isinstance(error, PayloadError) and "cannot hold" in str(error)
    assert seconds < 0.05 and peak < 100_000
    with pytest.raises(PayloadError, match="more than the limit"):
        codec.decode_tensor(buf)


@pytest.mark.parametrize("method", ["zlib", "lzma"])
def test_the_expansion_bound_admits_the_most_compressible_values(method) -> None:
    """All-zero values compress the most (1028.8:1 for zlib, about 6,500:1 for xz at this
    size): the bound must let them through, and refuse a claim just above it."""
    zeros = np.zeros(1 << 21, np.float32)
    buf = codec.encode_tensor(zeros, compression=method)
    info = codec.inspect(buf)
    assert info.compression == method
    assert info.value_bytes * MAX_EXPANSION[method] >= zeros.nbytes
    dense, _ = codec.decode_tensor(buf)
    assert np.array_equal(dense, zeros)
    code = codec.VALUE_DTYPES["float32"] | codec.COMPRESSIONS[method] << 4
    stream = buf[info.header_bytes :]
    claim = len(stream) * MAX_EXPANSION[method] // 4 + 1
    with pytest.raises(PayloadError, match="cannot hold"):
        codec.decode_tensor(sealed(Scheme.FULL, code, (claim,), claim, stream), max_entries=claim)


def test_compressed_values_larger_than_the_raw_ones_are_refused() -> None:
    """The encoder compresses only when that saves bytes."""
    raw = np.arange(4, dtype=np.float32)
    stream = zlib.compress(raw.tobytes())  # 4 values: 16 raw bytes, more compressed
    code = codec.VALUE_DTYPES["float32"] | codec.COMPRESSIONS["zlib"] << 4
    with pytest.raises(PayloadError, match="cannot hold"):
        codec.decode_tensor(sealed(Scheme.FULL, code, (4,), 4, stream))


def _claim_dictionary(stream: bytes, prop: int) -> bytes:
    """An xz stream whose block header claims another LZMA2 dictionary size (property byte
    ``prop``: 36 is 1 GiB), its header checksum recomputed."""
    start = 12  # after the stream header
    size = (stream[start] + 1) * 4
    header = bytearray(stream[start : start + size])
    at = header.index(b"\x21\x01") + 2  # the LZMA2 filter id and its one property byte
    header[at] = prop
    header[-4:] = struct.pack("<I", zlib.crc32(bytes(header[:-4])))
    return stream[:start] + bytes(header) + stream[start + size :]


def test_an_xz_stream_needing_a_large_dictionary_is_refused() -> None:
    """liblzma allocates the dictionary the stream asks for; preset 6 needs 8 MiB."""
    values = np.round(np.random.default_rng(0).standard_normal(50_000), 1).astype(np.float32)
    buf = codec.encode_tensor(values, compression="lzma")
    info = codec.inspect(buf)
    stream = buf[info.header_bytes :]
    assert np.array_equal(codec.decode_tensor(buf)[0], values)
    code = codec.VALUE_DTYPES["float32"] | codec.COMPRESSIONS["lzma"] << 4
    same = sealed(Scheme.FULL, code, values.shape, values.size, _claim_dictionary(stream, 22))
    assert np.array_equal(codec.decode_tensor(same)[0], values)  # 8 MiB: as written
    huge = sealed(Scheme.FULL, code, values.shape, values.size, _claim_dictionary(stream, 36))
    with pytest.raises(PayloadError, match="corrupt"):
        codec.decode_tensor(huge)


# ------------------------------------------------------------------ 3: zero dimensions
def test_a_zero_dimension_cannot_hide_a_huge_one() -> None:
    buf = sealed(Scheme.FULL, codec.VALUE_DTYPES["float32"], (0, 1 << 62), 0, b"")
    with pytest.raises(PayloadError, match="more than the limit"):
        codec.decode_tensor(buf)
    with pytest.raises(PayloadError, match="more than the limit"):
        codec.inspect(buf)
    dense, mask = codec.decode_tensor(codec.encode_tensor(np.zeros((0, 5), np.float32)))
    assert dense.shape == mask.shape == (0, 5)


# ------------------------------------------------------------------ 4: trailing bytes
@pytest.mark.parametrize("method", ["zlib", "lzma"])
@pytest.mark.parametrize("masked", [False, True])
def test_bytes_after_a_compressed_stream_are_refused(method, masked) -> None:
    rng = np.random.default_rng(2)
    values = np.round(rng.standard_normal((40, 50)), 1).astype(np.float32)
    mask = rng.random(values.shape) < 0.3 if masked else None
    buf = codec.encode_tensor(values, mask, compression=method)
    assert codec.inspect(buf).compression == method
    for tail in (b"\x00", b"junk", bytes(100)):
        with pytest.raises(PayloadError, match="follow the compressed values"):
            codec.decode_tensor(reseal(buf + tail))
    with pytest.raises(PayloadError, match="compressed values"):
        codec.decode_tensor(reseal(buf[:-1]))


# ------------------------------------------------------------------ 5: limits and work
def test_the_default_limit_refuses_one_entry_more() -> None:
    n = codec.DEFAULT_MAX_ENTRIES + 1
    buf = sealed(Scheme.EMPTY, codec.VALUE_DTYPES["float64"], (n,), 0, b"")
    with pytest.raises(PayloadError, match="more than the limit"):
        codec.decode_tensor(buf)


@pytest.mark.slow
def test_the_costliest_decodes_at_the_default_limit_stay_under_256_mb() -> None:
    """float64 values decompressed beside the dense float64 output (17 bytes an entry), and
    2-entry ENUM_ROWS rows (per-row counts) with float64 values."""
    n = codec.DEFAULT_MAX_ENTRIES
    rng = np.random.default_rng(9)
    values = np.round(rng.standard_normal(n), 1)
    mask = np.ones(n, bool)
    mask[rng.integers(0, n, 3)] = False
    short = np.zeros((n // 2, 2), bool)
    short[np.arange(n // 2), rng.integers(0, 2, n // 2)] = True
    cases = [
        codec.encode_tensor(values, mask, compression="zlib"),
        recode_positions(
            codec.encode_tensor(values.reshape(short.shape), short), short, Scheme.ENUM_ROWS, False
        ),
    ]
    for buf in cases:
        peak, _, error = traced_call(lambda buf=buf: codec.decode_tensor(buf))
        assert error is None and peak < MEMORY_LIMIT_BYTES, peak / 2**20


def test_enum_rows_of_a_thousand_densities_decode_without_thrashing_the_code_cache() -> None:
    """Every row at its own density level: each level's count code is built once, and kept
    (the decode tables after 256 levels are rebuilt from the kept codes, not from scratch)."""
    rng = np.random.default_rng(3)
    mask = rng.random((1000, 640)) < np.linspace(0.001, 0.999, 1000)[:, None]
    buf = recode_positions(codec.encode_mask(mask), mask, Scheme.ENUM_ROWS, False)
    count_code.cache_clear()
    count_table.cache_clear()
    start = time.perf_counter()
    assert np.array_equal(codec.decode_mask(buf), mask)
    assert time.perf_counter() - start < TIME_LIMIT_S
    built = count_code.cache_info().misses
    assert built > 256
    start = time.perf_counter()
    assert np.array_equal(codec.decode_mask(buf), mask)
    assert count_code.cache_info().misses == built  # nothing rebuilt from scratch
    assert time.perf_counter() - start < TIME_LIMIT_S / 2


@pytest.mark.parametrize("scheme", POSITION_SCHEMES[1:], ids=lambda s: s.name)
def test_position_decoding_memory_is_a_few_bytes_per_entry(scheme) -> None:
    """The Golomb decoder used to hold every zero bit's index (8 bytes each), the enumerative
    one a window array of 14 bytes per coded bit; both now work through bounded chunks."""
    rng = np.random.default_rng(4)
    mask = rng.random((2048, 1024)) < 0.3
    buf = recode_positions(codec.encode_mask(mask), mask, scheme, False)
    peak, _, error = traced_call(lambda: codec.decode_mask(buf))
    assert error is None and peak < 5 * mask.size, peak / mask.size


def test_short_rows_cost_no_per_block_padding() -> None:
    """ENUM_ROWS with 2-entry rows: the blocks are decoded in chunks, straight into the mask."""
    rng = np.random.default_rng(5)
    mask = np.zeros((1 << 19, 2), bool)
    mask[np.arange(mask.shape[0]), rng.integers(0, 2, mask.shape[0])] = True
    buf = recode_positions(codec.encode_mask(mask), mask, Scheme.ENUM_ROWS, False)
    peak, _, error = traced_call(lambda: codec.decode_mask(buf))
    assert error is None and peak < 20 * mask.size, peak / mask.size
