"""The decoders on hostile input (issue #19, codec): every bad buffer or payload gives back the
original, a valid decode of what it says, or a ``PayloadError``, in bounded time and memory.

The cases come from ``benchmarks.payload_fuzz`` (valid buffers and payloads from the encoder,
one mutation each, the checksum recomputed so that the mutation reaches the decoder's logic);
then one closed-form test per reported fault. The slow test runs 2,000 cases of the benchmark.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.payload_fuzz import (
    BUFFER_KINDS,
    FAILURES,
    MEMORY_LIMIT_BYTES,
    PAYLOAD_KINDS,
    TIME_LIMIT_S,
    crc_offset,
    make_case,
    mutate_buffer,
    recode_positions,
    reseal,
    run_case,
)
from fedticket.sparse.masks import mask_digest
from fedticket.wire import codec
from fedticket.wire.buffer import pack_header
from fedticket.wire.codec import PayloadError, Scheme
from fedticket.wire.enumerative import count_code, count_table
from fedticket.wire.records import PAYLOAD_KEY, decode_payload, encode_payload
from fedticket.wire.values import MAX_EXPANSION

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)
POSITION_SCHEMES = [Scheme.BITMAP, Scheme.GOLOMB, Scheme.ENUM, Scheme.ENUM_ROWS]


def _peak(fn: Callable[[], object]) -> tuple[int, float, BaseException | None]:
    """(tracemalloc peak bytes, seconds, the exception raised) of one call."""
    tracemalloc.start()
    start = time.perf_counter()
    error = None
    try:
        fn()
    except Exception as exc:
        error = exc
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, seconds, error


def _sealed(scheme: Scheme, value_code: int, shape, count: int, body: bytes, param=0) -> bytes:
    """A buffer with a hand-written header and a correct checksum."""
    header = pack_header(scheme, value_code, tuple(shape), count, 0, param)
    return reseal(header + bytes(4) + body)


def _sealed_positions(scheme: Scheme, shape, count: int, positions: bytes, param=0) -> bytes:
    header = pack_header(scheme, 0, tuple(shape), count, len(positions), param)
    return reseal(header + bytes(4) + positions)


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


# ------------------------------------------------------------------ 1: sizes a header claims
@pytest.mark.parametrize("position_bytes", range(9))
def test_an_enum_buffer_claiming_2_30_entries_is_refused_at_once(position_bytes) -> None:
    """21-29 bytes claiming 2**30 entries took 0.5-3.3 s and 0.85-1.36 GB to refuse."""
    positions = b"\xff" * position_bytes
    buf = _sealed_positions(Scheme.ENUM, (1 << 30,), 1 << 29, positions)
    assert 21 <= len(buf) <= 29
    for limit in (codec.DEFAULT_MAX_ENTRIES, 1 << 30):  # the limit, then the ENUM bound
        peak, seconds, error = _peak(lambda limit=limit: codec.decode_mask(buf, max_entries=limit))
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
    buf = _sealed_positions(scheme, shape, count, b"\x00" * 16, param)
    peak, seconds, error = _peak(lambda: codec.decode_mask(buf, max_entries=1 << 30))
    assert isinstance(error, PayloadError) and "cannot code" in str(error)
    assert seconds < 0.05 and peak < 100_000


def test_a_position_section_larger_than_any_encoding_is_refused_before_unpacking() -> None:
    buf = _sealed_positions(Scheme.GOLOMB, (100,), 3, bytes(1 << 20), 4 << 1)
    peak, _, error = _peak(lambda: codec.decode_mask(buf))
    assert isinstance(error, PayloadError) and peak < 100_000


def test_bitmap_padding_bits_must_be_zero() -> None:
    mask = np.zeros(13, bool)
    mask[[0, 5]] = True
    positions = bytearray(np.packbits(mask).tobytes())
    assert codec.decode_mask(_sealed_positions(Scheme.BITMAP, (13,), 2, bytes(positions)))[5]
    positions[-1] |= 1  # a padding bit: the same 13 entries, another buffer
    with pytest.raises(PayloadError, match="padding"):
        codec.decode_mask(_sealed_positions(Scheme.BITMAP, (13,), 2, bytes(positions)))


# ------------------------------------------------------------------ 2: compressed values
def test_a_tiny_zlib_buffer_claiming_2_30_values_is_refused_before_allocating() -> None:
    """33 bytes, FULL + zlib, claiming 2**30 float32 values: np.ones(2**30) (1 GiB) used to come
    before the decompression that fails."""
    stream = zlib.compress(bytes(10))
    full_zlib = codec.VALUE_DTYPES["float32"] | codec.COMPRESSIONS["zlib"] << 4
    buf = _sealed(Scheme.FULL, full_zlib, (1 << 30,), 1 << 30, stream)
    assert len(buf) <= 33
    peak, seconds, error = _peak(lambda: codec.decode_tensor(buf, max_entries=1 << 30))
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
        codec.decode_tensor(_sealed(Scheme.FULL, code, (claim,), claim, stream), max_entries=claim)


def test_compressed_values_larger_than_the_raw_ones_are_refused() -> None:
    """The encoder compresses only when that saves bytes."""
    raw = np.arange(4, dtype=np.float32)
    stream = zlib.compress(raw.tobytes())  # 4 values: 16 raw bytes, more compressed
    code = codec.VALUE_DTYPES["float32"] | codec.COMPRESSIONS["zlib"] << 4
    with pytest.raises(PayloadError, match="cannot hold"):
        codec.decode_tensor(_sealed(Scheme.FULL, code, (4,), 4, stream))


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
    same = _sealed(Scheme.FULL, code, values.shape, values.size, _claim_dictionary(stream, 22))
    assert np.array_equal(codec.decode_tensor(same)[0], values)  # 8 MiB: as written
    huge = _sealed(Scheme.FULL, code, values.shape, values.size, _claim_dictionary(stream, 36))
    with pytest.raises(PayloadError, match="corrupt"):
        codec.decode_tensor(huge)


# ------------------------------------------------------------------ 3: zero dimensions
def test_a_zero_dimension_cannot_hide_a_huge_one() -> None:
    buf = _sealed(Scheme.FULL, codec.VALUE_DTYPES["float32"], (0, 1 << 62), 0, b"")
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
    buf = _sealed(Scheme.EMPTY, codec.VALUE_DTYPES["float64"], (n,), 0, b"")
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
        peak, _, error = _peak(lambda buf=buf: codec.decode_tensor(buf))
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
    peak, _, error = _peak(lambda: codec.decode_mask(buf))
    assert error is None and peak < 5 * mask.size, peak / mask.size


def test_short_rows_cost_no_per_block_padding() -> None:
    """ENUM_ROWS with 2-entry rows: the blocks are decoded in chunks, straight into the mask."""
    rng = np.random.default_rng(5)
    mask = np.zeros((1 << 19, 2), bool)
    mask[np.arange(mask.shape[0]), rng.integers(0, 2, mask.shape[0])] = True
    buf = recode_positions(codec.encode_mask(mask), mask, Scheme.ENUM_ROWS, False)
    peak, _, error = _peak(lambda: codec.decode_mask(buf))
    assert error is None and peak < 20 * mask.size, peak / mask.size


# ------------------------------------------------------------------ 6: payload consistency
def _model() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(6)
    tensors = {
        "fc.weight": rng.standard_normal((20, 30)).astype(np.float32),
        "fc.bias": rng.standard_normal(20).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, np.int64),
    }
    return tensors, {"fc.weight": rng.random((20, 30)) < 0.2}


def _with(header: ConfigRecord, **changes) -> ConfigRecord:
    return ConfigRecord(dict(header) | {k.replace("_", "-"): v for k, v in changes.items()})


def _buffers(record: ArrayRecord, header: ConfigRecord) -> list[bytes]:
    data, out, offset = record[PAYLOAD_KEY].data, [], 0
    for length in header["lengths"]:
        out.append(data[offset : offset + length])
        offset += length
    return out


def _record(buffers: list[bytes]) -> ArrayRecord:
    data = b"".join(buffers)
    return ArrayRecord({PAYLOAD_KEY: Array("uint8", (len(data),), "raw", data)})


def test_valid_payloads_decode_exactly() -> None:
    tensors, masks = _model()
    for send_masks in (True, False):
        record, header = encode_payload(tensors, masks, send_masks=send_masks)
        payload = decode_payload(record, header, tensors, masks)
        assert payload.digest == mask_digest(masks) and payload.masks_sent == send_masks
        assert np.array_equal(payload.masks["fc.weight"], masks["fc.weight"])
        assert payload.tensors["bn.num_batches_tracked"].dtype == np.int64
    record, header = encode_payload(tensors)
    dense = decode_payload(record, header, tensors)
    assert dense.masks is None and dense.digest == "" and not dense.masks_sent
    assert all(np.array_equal(dense.tensors[n], t) for n, t in tensors.items())


def test_positions_under_a_masks_not_sent_header_are_refused() -> None:
    tensors, masks = _model()
    record, header = encode_payload(tensors, masks, send_masks=True)
    forged = _with(header, masks_sent=False)
    with pytest.raises(PayloadError, match="not sent, but its buffer codes positions"):
        decode_payload(record, forged, tensors, masks)


def test_a_known_buffer_under_a_masks_sent_header_is_refused() -> None:
    tensors, masks = _model()
    record, header = encode_payload(tensors, masks, send_masks=False)
    with pytest.raises(PayloadError, match="were sent, but its buffer leaves the positions out"):
        decode_payload(record, _with(header, masks_sent=True), tensors, masks)


def test_a_masked_tensor_with_an_empty_digest_and_no_held_mask_is_refused() -> None:
    tensors, _ = _model()
    record, header = encode_payload(tensors)
    forged = _with(header, masked=["fc.weight"], mask_digest=mask_digest({}))
    with pytest.raises(PayloadError, match="stale mask state"):
        decode_payload(record, forged, tensors)
    with pytest.raises(PayloadError, match="stale mask state"):  # no mask has digest ""
        decode_payload(record, forged, tensors, {"fc.weight": np.ones((20, 30), bool)})


def test_decoded_masks_must_have_the_header_digest_in_every_case() -> None:
    tensors, masks = _model()
    record, header = encode_payload(tensors, masks)
    with pytest.raises(PayloadError, match="digest"):
        decode_payload(record, _with(header, mask_digest=""), tensors)
    record, header = encode_payload(tensors)
    with pytest.raises(PayloadError, match="digest"):
        decode_payload(record, _with(header, mask_digest="0123456789abcdef"), tensors)
    record, header = encode_payload(tensors, masks, send_masks=False)
    stale = {"fc.weight": ~masks["fc.weight"]}
    with pytest.raises(PayloadError, match="stale mask state"):
        decode_payload(record, header, tensors, stale)


def test_an_unmasked_tensor_must_travel_dense() -> None:
    tensors, masks = _model()
    record, header = encode_payload(tensors, masks)
    forged = _with(header, masked=[], mask_digest="", masks_sent=False)
    with pytest.raises(PayloadError, match="not listed as masked"):
        decode_payload(record, forged, tensors)
    with pytest.raises(PayloadError, match="masks no tensor"):
        decode_payload(record, _with(forged, masks_sent=True), tensors)


@pytest.mark.parametrize(
    ("change", "fault"),
    [
        ({"masks_sent": 1}, "'masks-sent' must be true or false"),
        ({"codec_version": "1"}, "codec version"),
        ({"codec_version": True}, "codec version"),
        ({"lengths": [True, True, True]}, "'lengths' must be byte counts"),
        ({"lengths": [1.0, 2.0, 3.0]}, "'lengths' must be byte counts"),
        ({"tensors": ["fc.weight", "fc.weight", "fc.bias"]}, "more than once"),
        ({"tensors": [1, 2, 3]}, "list of tensor names"),
        ({"masked": ["fc.weight", "fc.weight"]}, "more than once"),
        ({"mask_digest": 5}, "'mask-digest' must be a string"),
    ],
)
def test_header_fields_must_have_their_types(change, fault) -> None:
    tensors, masks = _model()
    record, header = encode_payload(tensors, masks)
    with pytest.raises(PayloadError, match=fault):
        decode_payload(record, _with(header, **change), tensors)


def test_a_header_without_a_field_or_a_record_of_another_type_is_refused() -> None:
    tensors, masks = _model()
    record, header = encode_payload(tensors, masks)
    partial = ConfigRecord({k: v for k, v in header.items() if k != "masked"})
    with pytest.raises(PayloadError, match="lacks"):
        decode_payload(record, partial, tensors)
    with pytest.raises(PayloadError, match="must be an ArrayRecord"):
        decode_payload(ConfigRecord({"payload": b"x"}), header, tensors)  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="must be a ConfigRecord"):
        decode_payload(record, ["not", "a", "header"], tensors)  # type: ignore[arg-type]


def test_a_buffer_of_another_dtype_kind_is_refused_and_the_template_dtype_comes_back() -> None:
    tensors, masks = _model()
    record, header = encode_payload(tensors, masks, value_dtype="float16")
    assert decode_payload(record, header, tensors).tensors["fc.bias"].dtype == np.float32
    as_float = tensors | {"bn.num_batches_tracked": np.array(7.0, np.float32)}
    record, header = encode_payload(as_float, masks)
    with pytest.raises(PayloadError, match="float32 values, the model has int64"):
        decode_payload(record, header, tensors)
    as_int = tensors | {"fc.bias": np.arange(20, dtype=np.int32)}
    record, header = encode_payload(as_int, masks)
    with pytest.raises(PayloadError, match="int32 values, the model has float32"):
        decode_payload(record, header, tensors)


def test_payload_decoding_is_bounded_by_the_model_template() -> None:
    """A buffer may not claim more entries than the template's tensor, whatever its shape
    says (the default limit is far above a model's layers)."""
    tensors, masks = _model()
    record, header = encode_payload(tensors, masks)
    buffers = _buffers(record, header)
    big = codec.encode_tensor(np.zeros(10_000, np.float32))
    buffers[1] = big
    forged = _with(header, lengths=[len(b) for b in buffers])
    with pytest.raises(PayloadError, match="more than the limit 20"):
        decode_payload(_record(buffers), forged, tensors)
    zero = {"empty": np.zeros((0, 4), np.float32)}
    record, header = encode_payload(zero)
    assert decode_payload(record, header, zero).tensors["empty"].shape == (0, 4)
    hidden = _sealed(Scheme.FULL, codec.VALUE_DTYPES["float32"], (0, 1 << 40), 0, b"")
    with pytest.raises(PayloadError, match="more than the limit"):
        decode_payload(_record([hidden]), _with(header, lengths=[len(hidden)]), zero)


def test_a_corrupted_buffer_reports_its_checksum_before_any_contradiction() -> None:
    tensors, masks = _model()
    record, header = encode_payload(tensors, masks)
    buffers = _buffers(record, header)
    buffers[1] = bytearray(buffers[1])
    buffers[1][2] = Scheme.GOLOMB  # the bias now claims positions, and its checksum fails
    with pytest.raises(PayloadError, match="checksum mismatch"):
        decode_payload(_record([bytes(b) for b in buffers]), header, tensors)


# ------------------------------------------------------------------ the same through the bench
def test_a_header_varint_rewritten_to_a_claim_at_the_limit_decodes_in_bounds() -> None:
    """The mutation that found the faults: one dimension as large as the default limit
    allows. The decode refuses it or returns a valid (large) mask, within the limits."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        mask = rng.random((8, 65)) < 0.4
        buf = recode_positions(codec.encode_mask(mask), mask, Scheme.ENUM, False)
        bad = mutate_buffer(buf, "varint", rng)
        peak, seconds, error = _peak(lambda bad=bad: codec.decode_mask(bad))
        assert error is None or isinstance(error, PayloadError)
        assert seconds < TIME_LIMIT_S and peak < MEMORY_LIMIT_BYTES


def test_hand_written_headers_match_the_encoder() -> None:
    buf = codec.encode_tensor(np.arange(3, dtype=np.float32))
    hand = _sealed(Scheme.FULL, 1, (3,), 3, np.arange(3, dtype="<f4").tobytes())
    assert hand == buf and struct.unpack_from("<I", buf, 9)[0] == zlib.crc32(
        buf[13:], zlib.crc32(buf[:9])
    )


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
