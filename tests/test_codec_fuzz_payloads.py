"""Payload consistency (issue #19, fault 6): a payload's header, record and buffers must agree
with each other, with the masks the receiver holds and with the model template; each
contradiction is a ``PayloadError`` naming it, and valid payloads decode exactly."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord

from fedticket.sparse.masks import mask_digest
from fedticket.wire import codec
from fedticket.wire.codec import PayloadError, Scheme
from fedticket.wire.records import PAYLOAD_KEY, decode_payload, encode_payload
from tests.codec_fuzz_helpers import sealed


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
    hidden = sealed(Scheme.FULL, codec.VALUE_DTYPES["float32"], (0, 1 << 40), 0, b"")
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
