"""Payload fuzz: payload cases, a small model encoded as one payload and then one of its
buffers, its header fields, its record or the receiver's held masks mutated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

from benchmarks.payload_fuzz_cases import Case, same_array, zero_outside
from benchmarks.payload_fuzz_inputs import random_model, scheme_of
from benchmarks.payload_fuzz_mutations import BUFFER_KINDS, mutate_buffer, pick
from fedticket.wire import codec
from fedticket.wire.records import PAYLOAD_KEY, Payload, decode_payload, encode_payload

# mutations of a payload's header, its record, or the masks the receiver holds
PAYLOAD_KIND_NOTES = {
    "hdr-tensors": "names renamed, duplicated, dropped, swapped or not strings",
    "hdr-lengths": "a boundary moved, lengths swapped, negative, float, bool or one missing",
    "hdr-masked": "an unmasked tensor listed, a masked one dropped, a duplicate, non-strings",
    "hdr-digest": "another digest, an empty one, or not a string",
    "hdr-masks-sent": "flipped, or an int, string or float",
    "hdr-version": "another version, or a string, bool or float",
    "hdr-missing": "one header field removed",
    "record": "another record type, an extra or renamed array, another dtype or stype, short",
    "held-masks": "the receiver's masks: one missing or one bit off (or wrong ones when sent)",
    "buffer-swap": "two tensors' buffers swapped",
}
PAYLOAD_KINDS = tuple(PAYLOAD_KIND_NOTES)


@dataclass
class _Encoded:
    """A payload as the wire carries it: buffers split out, header fields as a dict."""

    buffers: list[bytes]
    fields: dict

    def record(self) -> ArrayRecord:
        data = b"".join(self.buffers)
        return ArrayRecord({PAYLOAD_KEY: Array("uint8", (len(data),), "raw", data)})

    def header(self) -> ConfigRecord | dict:
        try:
            return ConfigRecord(dict(self.fields))
        except (TypeError, ValueError):  # not a value Flower would carry; a dict reaches us
            return dict(self.fields)


def _split(record: ArrayRecord, header: ConfigRecord) -> _Encoded:
    data, buffers, offset = record[PAYLOAD_KEY].data, [], 0
    for length in header["lengths"]:
        buffers.append(data[offset : offset + length])
        offset += length
    return _Encoded(buffers, dict(header))


def _mutate_header(enc: _Encoded, kind: str, rng: np.random.Generator) -> None:
    f = enc.fields
    names, lengths, masked = list(f["tensors"]), list(f["lengths"]), list(f["masked"])
    i = int(rng.integers(len(names)))
    if kind == "hdr-tensors":
        choice = int(rng.integers(5))
        if choice == 0:
            names[i] += "x"
        elif choice == 1 and len(names) > 1:
            names[i] = names[(i + 1) % len(names)]
        elif choice == 2:
            del names[i]
        elif choice == 3 and len(names) > 1:
            j = (i + 1) % len(names)
            names[i], names[j] = names[j], names[i]
        else:
            names = list(range(len(names)))  # type: ignore[arg-type]
        f["tensors"] = names
    elif kind == "hdr-lengths":
        choice = int(rng.integers(6))
        if choice == 0 and len(lengths) > 1:
            lengths[i] += 1
            lengths[(i + 1) % len(lengths)] -= 1
        elif choice == 1 and len(lengths) > 1:
            j = (i + 1) % len(lengths)
            lengths[i], lengths[j] = lengths[j], lengths[i]
        elif choice == 2:
            lengths[i] = -lengths[i] - 1
        elif choice == 3:
            lengths = [float(n) for n in lengths]  # type: ignore[misc]
        elif choice == 4:
            lengths = [bool(n) for n in lengths]  # type: ignore[misc]
        else:
            lengths.pop()
        f["lengths"] = lengths
    elif kind == "hdr-masked":
        unmasked = [n for n in names if n not in masked]
        choice = int(rng.integers(4))
        if choice == 0 and unmasked:
            masked.append(pick(rng, unmasked))
        elif choice == 1 and masked:
            masked.pop(int(rng.integers(len(masked))))
        elif choice == 2 and masked:
            masked.append(masked[0])
        else:
            masked = [1] * max(1, len(masked))  # type: ignore[list-item]
        f["masked"] = masked
    elif kind == "hdr-digest":
        f["mask-digest"] = pick(rng, ["", "0" * 16, f"{int(rng.integers(2**62)):016x}", 7, b"x"])
        if f["mask-digest"] == "" and not masked:
            f["mask-digest"] = "deadbeefdeadbeef"
    elif kind == "hdr-masks-sent":
        f["masks-sent"] = pick(rng, [not f["masks-sent"], int(f["masks-sent"]), "true", 1.0])
    elif kind == "hdr-version":
        f["codec-version"] = pick(rng, [0, 2, -1, codec.FORMAT_VERSION + 256, "1", True, 1.0])
    elif kind == "hdr-missing":
        del f[pick(rng, list(f))]


def _bad_record(enc: _Encoded, rng: np.random.Generator) -> object:
    data = b"".join(enc.buffers)
    choice = int(rng.integers(6))
    if choice == 0:
        return ConfigRecord({"payload": data})
    if choice == 1:
        extra = Array("uint8", (1,), "raw", b"\x00")
        return ArrayRecord({PAYLOAD_KEY: enc.record()[PAYLOAD_KEY], "extra": extra})
    if choice == 2:
        return ArrayRecord({"arrays": Array("uint8", (len(data),), "raw", data)})
    if choice == 3:
        return ArrayRecord({PAYLOAD_KEY: Array("float32", (len(data),), "raw", data)})
    if choice == 4:
        return ArrayRecord({PAYLOAD_KEY: Array("uint8", (len(data),), "numpy.ndarray", data)})
    return ArrayRecord({PAYLOAD_KEY: Array("uint8", (len(data) - 1,), "raw", data[:-1])})


def _bad_held(
    held: dict[str, np.ndarray] | None, masks: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray] | None:
    if held is None:  # masks were sent: whatever the receiver holds must not matter
        return {name: ~mask for name, mask in masks.items()}
    if not held:
        return None
    changed = {name: mask.copy() for name, mask in held.items()}
    name = pick(rng, sorted(changed))
    choice = int(rng.integers(3))
    if choice == 0:
        del changed[name]
    elif choice == 1 and changed[name].size:
        changed[name].flat[int(rng.integers(changed[name].size))] ^= True
    else:
        return None
    return changed


def _valid_payload(result: object, reference: Payload, template: Mapping) -> bool:
    if not isinstance(result, Payload):
        return False
    tensors, masks = result.tensors, result.masks or {}
    ref_masks = reference.masks or {}
    return (
        list(tensors) == list(template)
        and all(
            tensors[n].dtype == template[n].dtype and tensors[n].shape == template[n].shape
            for n in template
        )
        and list(masks) == list(ref_masks)
        and all(same_array(masks[n], ref_masks[n]) for n in masks)
        and result.digest == reference.digest
        and result.masks_sent == reference.masks_sent
        and all(zero_outside(tensors[n], masks[n]) for n in masks)
    )


def payload_case(rng: np.random.Generator, kind: str) -> Case:
    tensors, masks = random_model(rng)
    send_masks = rng.random() < 0.6
    record, header = encode_payload(
        tensors,
        masks,
        send_masks=send_masks,
        value_dtype=str(rng.choice(["float32", "float16", "bfloat16"])),
        compression=str(rng.choice(["none", "zlib", "lzma"])),
    )
    masks_sent = bool(header["masks-sent"])
    held = None if masks_sent else dict(masks)
    if masks_sent and rng.random() < 0.5:
        held = dict(masks)  # a receiver that holds the masks already
    reference = decode_payload(record, header, tensors, held)
    decoded_masks = reference.masks or {}
    truth_ok = sorted(decoded_masks) == sorted(masks) and all(
        same_array(decoded_masks[n], m) for n, m in masks.items()
    )
    enc = _split(record, header)
    scheme = "payload"
    bad_record: object = None
    bad_held = held
    if kind in BUFFER_KINDS:
        i = int(rng.integers(len(enc.buffers)))
        scheme = scheme_of(enc.buffers[i])
        enc.buffers[i] = mutate_buffer(enc.buffers[i], kind, rng)
        enc.fields["lengths"] = [len(b) for b in enc.buffers]
    elif kind == "record":
        bad_record = _bad_record(enc, rng)
    elif kind == "held-masks":
        bad_held = _bad_held(held, masks, rng)
    elif kind == "buffer-swap" and len(enc.buffers) > 1:
        i, j = rng.choice(len(enc.buffers), 2, replace=False)
        enc.buffers[i], enc.buffers[j] = enc.buffers[j], enc.buffers[i]
        enc.fields["lengths"] = [len(b) for b in enc.buffers]
    else:
        _mutate_header(enc, kind, rng)
    record_in = enc.record() if bad_record is None else bad_record
    header_in = enc.header()
    return Case(
        "payload",
        kind,
        scheme,
        lambda: decode_payload(record_in, header_in, tensors, bad_held),  # type: ignore[arg-type]
        reference,
        lambda result: _valid_payload(result, reference, tensors),
        truth_ok,
    )
