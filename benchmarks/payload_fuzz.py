"""Payload fuzz: valid codec buffers and payloads, mutated, then decoded.

Every decode must give back exactly what the unmutated input decodes to, or raise
``PayloadError``; where a mutation can turn a valid input into another valid one (bytes changed
and the buffer's checksum recomputed, two tensors of one shape swapped), it may instead return
a valid decode of the changed input (``ok-altered``: the shapes, dtypes and counts its header
says, zeros outside the mask, a payload's masks and digest unchanged). Anything else fails: an
exception other than ``PayloadError``, a decode over 1 s or over 256 MB (tracemalloc peak; numpy
reports its buffers to it), a result that is not a valid decode of its input (silently wrong),
or a valid input rejected.

Mutated buffers get their crc32 recomputed (``reseal``), except in the ``flip-raw`` kind, so
that the mutations reach the decoder's logic and not only its checksum. The tests
(``tests/test_codec_fuzz.py``) draw their cases from this module too.

Usage::

    python -m benchmarks.payload_fuzz                 # 20,000 cases, seed 0
    python -m benchmarks.payload_fuzz --cases 2000 --seed 7

Writes ``results/payload_fuzz.csv`` (a row per target and mutation kind) and ``.md``, and exits
with status 1 if any case failed.
"""

from __future__ import annotations

import argparse
import contextlib
import struct
import sys
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import Array, ArrayRecord, ConfigRecord

from fedticket.store.results import markdown_table
from fedticket.wire import codec
from fedticket.wire.buffer import assemble, pack_header, varint
from fedticket.wire.codec import PayloadError, Scheme
from fedticket.wire.golomb import best_golomb, kept_gaps
from fedticket.wire.positions import Choice, encode_positions
from fedticket.wire.records import PAYLOAD_KEY, Payload, decode_payload, encode_payload

RESULTS = Path(__file__).resolve().parent / "results"
TIME_LIMIT_S = 1.0
MEMORY_LIMIT_BYTES = 256 * 2**20

TARGETS = ("mask", "tensor", "payload")
# mutations of one codec buffer (in a payload: of one tensor's buffer, its length updated);
# all but flip-raw recompute the buffer's checksum afterwards
BUFFER_KINDS = (
    "none",
    "flip",
    "flip-raw",
    "byte",
    "insert",
    "delete",
    "truncate",
    "extend",
    "splice",
    "fill",
    "varint",
    "scheme",
    "value-code",
    "ndim",
)
# mutations of a payload's header, its record, or the masks the receiver holds
PAYLOAD_KINDS = (
    "hdr-tensors",
    "hdr-lengths",
    "hdr-masked",
    "hdr-digest",
    "hdr-masks-sent",
    "hdr-version",
    "hdr-missing",
    "record",
    "held-masks",
    "buffer-swap",
)
KIND_NOTES = {
    "none": "the valid input itself",
    "flip": "one bit flipped",
    "flip-raw": "one bit flipped, checksum left stale",
    "byte": "one byte replaced",
    "insert": "1-8 random bytes inserted",
    "delete": "1-8 bytes deleted",
    "truncate": "cut short",
    "extend": "1-16 bytes appended",
    "splice": "the tail replaced by random bytes of another length",
    "fill": "everything after the header set to 00, FF, 55 or 80",
    "varint": "a header varint (dimension, count, position length, parameter) rewritten: edges, "
    "huge values, a dimension at the default limit, a huge one beside a zero",
    "scheme": "the scheme byte changed",
    "value-code": "the dtype/compression byte changed",
    "ndim": "the dimension count changed",
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
# kinds that can make another valid input; the others must decode to the original or fail
CAN_ALTER = frozenset(BUFFER_KINDS) - {"none", "flip-raw"} | {"hdr-tensors", "buffer-swap"}
FAILURES = ("other-exception", "wrong-result", "valid-rejected")
DENSITIES = (0.005, 0.02, 0.05, 0.1, 0.2, 0.3, 0.38, 0.45, 0.5, 0.55, 0.62, 0.8, 0.95, 0.99)
ROW_LENGTHS = (1, 2, 3, 5, 9, 25, 63, 64, 65, 100, 200, 576)


# ---------------------------------------------------------------------------- valid inputs
def random_shape(rng: np.random.Generator, max_entries: int = 4096) -> tuple[int, ...]:
    """Scalars, zero-size, vectors, matrices (rows of typical layer lengths) and conv kernels."""
    pick = rng.random()
    if pick < 0.03:
        return ()
    if pick < 0.06:
        return (0, int(rng.integers(1, 9)))
    if pick < 0.35:
        return (int(rng.integers(1, max_entries + 1)),)
    if pick < 0.8:
        length = int(rng.choice(ROW_LENGTHS))
        return (int(rng.integers(1, max(2, min(64, max_entries // length)) + 1)), length)
    side = int(rng.choice([1, 3, 5]))
    return (int(rng.integers(1, 17)), int(rng.integers(1, 9)), side, side)


def random_mask(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """I.i.d. at a density from 0.005 to 0.99, rows of different densities, whole rows kept or
    pruned (the ENUM_ROWS cases), all kept or none."""
    style = rng.choice(["iid", "iid", "graded", "rows", "all", "none"])
    if style == "all":
        return np.ones(shape, bool)
    if style == "none":
        return np.zeros(shape, bool)
    if style in ("graded", "rows") and len(shape) >= 2:
        rows = shape[0]
        if style == "graded":
            density = rng.permutation(np.linspace(rng.random() * 0.1, rng.random(), rows))
        else:
            density = (rng.random(rows) < 0.5).astype(float)
        flat = rng.random((rows, int(np.prod(shape[1:])))) < density[:, None]
        if flat.size:
            flat.flat[rng.integers(0, flat.size, 2)] ^= True
        return flat.reshape(shape)
    d = float(rng.choice(DENSITIES)) if rng.random() < 0.8 else float(rng.random())
    return np.asarray(rng.random(shape) < d)


def random_values(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype in ("int32", "int64"):
        return np.asarray(rng.integers(-(2**31), 2**31, shape), dtype)
    values = np.asarray(rng.standard_normal(shape))
    if rng.random() < 0.4:
        values = np.round(values, 1)  # few distinct values: compression pays
    if rng.random() < 0.1 and values.size:
        values.flat[rng.integers(0, values.size, 3)] = rng.choice([np.nan, np.inf, -0.0], 3)
    return values.astype(dtype)


def recode_positions(buf: bytes, mask: np.ndarray, scheme: Scheme, invert: bool) -> bytes:
    """``buf`` (positions sent) with its positions coded by ``scheme`` instead of the encoder's
    pick: a valid buffer the encoder would not write (it picks the smallest), so that every
    position decoder is reached. Needs 0 < kept < entries (and rows for ENUM_ROWS)."""
    info = codec.inspect(buf)
    flat = mask.reshape(-1)
    param = 0
    if scheme == Scheme.GOLOMB:
        _, m = best_golomb(kept_gaps(~flat if invert else flat), flat.size)
        param = (m << 1) | int(invert)
    positions = encode_positions(mask, Choice(scheme, 0, param))
    values = buf[info.header_bytes + info.position_bytes :]
    header = pack_header(scheme, buf[3], mask.shape, info.count, len(positions), param)
    return assemble(header, b"", positions + values)


def _maybe_recode(rng: np.random.Generator, buf: bytes, mask: np.ndarray) -> bytes:
    kept = int(mask.sum())
    if not 0 < kept < mask.size or rng.random() < 0.6:
        return buf
    schemes = [Scheme.BITMAP, Scheme.GOLOMB, Scheme.ENUM]
    if mask.ndim >= 2:
        schemes.append(Scheme.ENUM_ROWS)
    return recode_positions(buf, mask, schemes[int(rng.integers(len(schemes)))], rng.random() < 0.5)


def scheme_of(buf: bytes) -> str:
    return codec.inspect(buf).scheme.name


# ---------------------------------------------------------------------------- mutations
def crc_offset(buf: bytes) -> int | None:
    """Where a buffer's crc32 sits, read from its header as the format lays it out (None if
    the header is too damaged to say)."""
    if len(buf) < 5 or buf[4] > codec.MAX_NDIM:
        return None
    pos = 5
    for _ in range(buf[4] + 3):  # the dimensions, count, position length, scheme parameter
        for _ in range(10):
            if pos >= len(buf):
                return None
            pos += 1
            if not buf[pos - 1] & 0x80:
                break
        else:
            return None
    pos += 4 if buf[2] == Scheme.KNOWN else 0  # the held-mask check
    return pos if pos + 4 <= len(buf) else None


def reseal(buf: bytes) -> bytes:
    """``buf`` with a correct crc32 (unchanged if its header cannot be read)."""
    at = crc_offset(buf)
    if at is None:
        return buf
    crc = zlib.crc32(buf[at + 4 :], zlib.crc32(buf[:at]))
    return buf[:at] + struct.pack("<I", crc) + buf[at + 4 :]


def _varint_fields(buf: bytes) -> list[tuple[int, int]]:
    """(start, end) of each header varint."""
    fields, pos = [], 5
    for _ in range(min(buf[4], codec.MAX_NDIM) + 3):
        start = pos
        while pos < len(buf) and buf[pos] & 0x80 and pos - start < 9:
            pos += 1
        pos += 1
        if pos > len(buf):
            break
        fields.append((start, pos))
    return fields


def _interesting_value(rng: np.random.Generator, values: list[int], j: int, ndim: int) -> int:
    """A new value for header varint ``j``: edges, huge ones, and hostile claims that still
    pass the entry limit (a dimension as large as the decoder's default limit allows with
    the others, or a huge one beside a zero dimension)."""
    old = values[j]
    choices = [0, 1, 2, 127, 128, old + 1, max(0, old - 1), 2 * old + 1, 2**31 - 1, 2**32]
    choices += [2**62, 2**64 - 1, 2**70 - 1, int(rng.integers(0, 2**40))]
    if j < ndim:
        others = [d for i, d in enumerate(values[:ndim]) if i != j]
        choices += [codec.DEFAULT_MAX_ENTRIES // max(1, int(np.prod([d for d in others if d])))] * 4
        if 0 in others:
            choices += [2**62] * 4
    return int(choices[int(rng.integers(len(choices)))])


def _rewrite_varints(buf: bytes, rng: np.random.Generator) -> bytes:
    """One header varint changed (and, a third of the time, the count made to fit the new
    shape: all, all but one, or half of the entries)."""
    fields = _varint_fields(buf)
    if not fields:
        return buf
    values = [_decode_varint(buf, start)[0] for start, _ in fields]
    ndim = min(buf[4], codec.MAX_NDIM)
    j = int(rng.integers(len(values)))
    values[j] = _interesting_value(rng, values, j, ndim)
    if j < ndim < len(values) and rng.random() < 0.35:
        n = int(np.prod(values[:ndim], dtype=object))
        values[ndim] = int(_pick(rng, [n, max(0, n - 1), n // 2]))
    head = b"".join(varint(v) for v in values)
    return buf[:5] + head + buf[fields[-1][1] :]


def mutate_buffer(buf: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One mutation of ``kind``; resealed unless the kind is flip-raw (or none)."""
    out = bytearray(buf)
    size = len(out)
    at = int(rng.integers(0, size)) if size else 0
    noise = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    if kind == "none":
        return buf
    if kind in ("flip", "flip-raw") and size:
        out[at] ^= 1 << int(rng.integers(8))
    elif kind == "byte" and size:
        out[at] = int(rng.integers(256))
    elif kind == "insert":
        out[at:at] = noise[: int(rng.integers(1, 9))]
    elif kind == "delete":
        del out[at : at + int(rng.integers(1, 9))]
    elif kind == "truncate":
        del out[int(rng.integers(0, max(size, 1))) :]
    elif kind == "extend":
        out += noise if rng.random() < 0.5 else bytes(len(noise))
    elif kind == "splice":
        tail = int(rng.integers(0, 2 * (size - at) + 2))
        out[at:] = rng.integers(0, 256, tail, dtype=np.uint8).tobytes()
    elif kind == "fill":  # everything after the header: all zeros, all ones or a pattern
        start = (crc_offset(buf) or size) + 4
        byte = int(rng.choice([0x00, 0xFF, 0x55, 0x80]))
        out[start:] = bytes([byte]) * max(0, size - start)
    elif kind == "varint" and size > 5:
        out = bytearray(_rewrite_varints(buf, rng))
    elif kind == "scheme" and size > 2:
        out[2] = int(rng.integers(0, 8))
    elif kind == "value-code" and size > 3:
        out[3] = int(rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 0x11, 0x21, 0x31, 0x14, 0x26, 0xFF]))
    elif kind == "ndim" and size > 4:
        out[4] = int(rng.integers(0, codec.MAX_NDIM + 2))
    out = bytes(out)
    return out if kind == "flip-raw" else reseal(out)


def _decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(buf):
        value |= (buf[pos] & 0x7F) << shift
        shift += 7
        pos += 1
        if not buf[pos - 1] & 0x80:
            break
    return value, pos


# ---------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One mutated input: ``decode`` decodes it, ``reference`` is what the unmutated input
    decodes to, ``valid`` says whether a different result is a valid decode of the input."""

    target: str
    kind: str
    scheme: str
    decode: Callable[[], object]
    reference: object
    valid: Callable[[object], bool]
    truth_ok: bool = True  # the unmutated input decoded to what was encoded


def _same_array(a: object, b: object) -> bool:
    return (
        isinstance(a, np.ndarray)
        and isinstance(b, np.ndarray)
        and a.dtype == b.dtype
        and a.shape == b.shape
        and a.tobytes() == b.tobytes()
    )


def same_result(a: object, b: object) -> bool:
    """Bitwise equality of two decode results (arrays, (values, mask) pairs or Payloads)."""
    if isinstance(a, Payload) and isinstance(b, Payload):
        masks_a, masks_b = a.masks or {}, b.masks or {}
        return (
            list(a.tensors) == list(b.tensors)
            and all(_same_array(a.tensors[k], b.tensors[k]) for k in a.tensors)
            and list(masks_a) == list(masks_b)
            and all(_same_array(masks_a[k], masks_b[k]) for k in masks_a)
            and (a.masks is None) == (b.masks is None)
            and a.digest == b.digest
            and a.masks_sent == b.masks_sent
        )
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same_array(x, y) for x, y in zip(a, b, strict=True))
    return _same_array(a, b)


def _zero_outside(dense: np.ndarray, mask: np.ndarray) -> bool:
    outside = dense[~mask]
    return outside.tobytes() == bytes(outside.nbytes)


def _valid_mask(buf: bytes, result: object) -> bool:
    info = codec.inspect(buf, verify=False)
    return (
        isinstance(result, np.ndarray)
        and result.dtype == bool
        and result.shape == info.shape
        and int(np.count_nonzero(result)) == info.count
    )


def _valid_tensor(buf: bytes, held: np.ndarray | None, result: object) -> bool:
    info = codec.inspect(buf, verify=False)
    if not (isinstance(result, tuple) and len(result) == 2):
        return False
    dense, mask = result
    return (
        dense.shape == mask.shape == info.shape
        and dense.dtype == info.decoded_dtype
        and mask.dtype == bool
        and int(np.count_nonzero(mask)) == info.count
        and _zero_outside(dense, mask)
        and (info.scheme != Scheme.KNOWN or np.array_equal(mask, held))
    )


def mask_case(rng: np.random.Generator, kind: str) -> Case:
    mask = random_mask(rng, random_shape(rng))
    buf = _maybe_recode(rng, codec.encode_mask(mask), mask)
    reference = codec.decode_mask(buf)
    bad = mutate_buffer(buf, kind, rng)
    return Case(
        "mask",
        kind,
        scheme_of(buf),
        lambda: codec.decode_mask(bad),
        reference,
        lambda result: _valid_mask(bad, result),
        _same_array(reference, mask),
    )


def tensor_case(rng: np.random.Generator, kind: str) -> Case:
    shape = random_shape(rng)
    dtype = str(rng.choice(["float32", "float32", "float32", "float64", "int64", "int32"]))
    values = random_values(rng, shape, dtype)
    mask = None if rng.random() < 0.25 else random_mask(rng, shape)
    send_mask = mask is None or rng.random() < 0.75
    buf = codec.encode_tensor(
        values,
        mask,
        send_mask=send_mask,
        value_dtype=str(rng.choice(["float32", "float16", "bfloat16"])),
        compression=str(rng.choice(["none", "zlib", "lzma"])),
    )
    if mask is not None and send_mask:
        buf = _maybe_recode(rng, buf, mask)
    held = None if send_mask else mask
    reference = codec.decode_tensor(buf, held)
    truth = np.ones(shape, bool) if mask is None else mask
    lossless = codec.inspect(buf).value_dtype in ("float32", "float64", "int64", "int32")
    truth_ok = _same_array(reference[1], truth) and (
        not lossless or _same_array(reference[0], np.where(truth, values, 0).astype(values.dtype))
    )
    bad = mutate_buffer(buf, kind, rng)
    return Case(
        "tensor",
        kind,
        scheme_of(buf),
        lambda: codec.decode_tensor(bad, held),
        reference,
        lambda result: _valid_tensor(bad, held, result),
        truth_ok,
    )


# ---------------------------------------------------------------------------- payloads
def random_model(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A few named tensors (weights, biases, a BatchNorm counter) and masks for some weights."""
    tensors: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for layer in range(int(rng.integers(1, 4))):
        shape = random_shape(rng, 2048)
        dtype = "float64" if rng.random() < 0.1 else "float32"
        tensors[f"layer{layer}.weight"] = random_values(rng, shape, dtype)
        if rng.random() < 0.7:
            masks[f"layer{layer}.weight"] = random_mask(rng, shape)
        if rng.random() < 0.5:
            bias = (shape[0],) if shape else (1,)
            tensors[f"layer{layer}.bias"] = random_values(rng, bias, "float32")
    if rng.random() < 0.3:
        tensors["bn.num_batches_tracked"] = np.array(int(rng.integers(0, 10**6)), np.int64)
    return tensors, masks


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


def _pick(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]


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
            masked.append(_pick(rng, unmasked))
        elif choice == 1 and masked:
            masked.pop(int(rng.integers(len(masked))))
        elif choice == 2 and masked:
            masked.append(masked[0])
        else:
            masked = [1] * max(1, len(masked))  # type: ignore[list-item]
        f["masked"] = masked
    elif kind == "hdr-digest":
        f["mask-digest"] = _pick(rng, ["", "0" * 16, f"{int(rng.integers(2**62)):016x}", 7, b"x"])
        if f["mask-digest"] == "" and not masked:
            f["mask-digest"] = "deadbeefdeadbeef"
    elif kind == "hdr-masks-sent":
        f["masks-sent"] = _pick(rng, [not f["masks-sent"], int(f["masks-sent"]), "true", 1.0])
    elif kind == "hdr-version":
        f["codec-version"] = _pick(rng, [0, 2, -1, codec.FORMAT_VERSION + 256, "1", True, 1.0])
    elif kind == "hdr-missing":
        del f[_pick(rng, list(f))]


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
    name = _pick(rng, sorted(changed))
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
        and all(_same_array(masks[n], ref_masks[n]) for n in masks)
        and result.digest == reference.digest
        and result.masks_sent == reference.masks_sent
        and all(_zero_outside(tensors[n], masks[n]) for n in masks)
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
        _same_array(decoded_masks[n], m) for n, m in masks.items()
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


MAKERS: dict[str, Callable[[np.random.Generator, str], Case]] = {
    "mask": mask_case,
    "tensor": tensor_case,
    "payload": payload_case,
}


def kinds_for(target: str) -> tuple[str, ...]:
    return BUFFER_KINDS + PAYLOAD_KINDS if target == "payload" else BUFFER_KINDS


def make_case(rng: np.random.Generator, target: str | None = None, kind: str | None = None) -> Case:
    """A random case (a random target and a kind that applies to it, unless given)."""
    target = target or str(rng.choice(TARGETS))
    kind = kind or str(rng.choice(kinds_for(target)))
    return MAKERS[target](rng, kind)


# ---------------------------------------------------------------------------- running
def run_case(case: Case) -> dict:
    """Decode once timed (counting the warnings raised), once under tracemalloc for the peak,
    and name the outcome."""
    detail = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            result, outcome = case.decode(), None
        except PayloadError as exc:
            result, outcome, detail = None, "PayloadError", str(exc)
        except Exception as exc:
            result, outcome, detail = None, "other-exception", f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - start
    tracemalloc.start()
    with contextlib.suppress(Exception):
        case.decode()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if outcome is None:
        if not case.truth_ok:
            outcome, detail = "wrong-result", "the unmutated input did not decode to its values"
        elif same_result(result, case.reference):
            outcome = "ok-identical"
        elif case.kind in CAN_ALTER and case.valid(result):
            outcome = "ok-altered"
        else:
            outcome, detail = "wrong-result", "decoded to something else than its input says"
    elif outcome == "PayloadError" and case.kind == "none":
        outcome = "valid-rejected"
    return {
        "target": case.target,
        "kind": case.kind,
        "scheme": case.scheme,
        "outcome": outcome,
        "seconds": seconds,
        "peak_bytes": peak,
        "warnings": len(caught),
        "detail": detail[:200],
    }


def failed(row: Mapping) -> bool:
    return (
        row["outcome"] in FAILURES
        or row["seconds"] > TIME_LIMIT_S
        or row["peak_bytes"] > MEMORY_LIMIT_BYTES
    )


def run_cases(cases: int, seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """``cases`` random cases, case i drawn from the generator seeded with (seed, i)."""
    rows = []
    for i in range(cases):
        row = run_case(make_case(np.random.default_rng([seed, i])))
        rows.append({"case": i, **row})
        if progress and (i + 1) % 2000 == 0:
            print(f"{i + 1} cases", flush=True)
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per target and mutation kind (and all together): cases, outcomes, the slowest decode
    and the largest peak."""

    def row(group: pd.DataFrame) -> dict:
        outcome = group["outcome"]
        return {
            "cases": len(group),
            "errors": int((outcome == "PayloadError").sum()),
            "ok": int((outcome == "ok-identical").sum()),
            "altered": int((outcome == "ok-altered").sum()),
            "max_seconds": float(group["seconds"].max()),
            "max_MB": float(group["peak_bytes"].max() / 2**20),
            "other_exceptions": int((outcome == "other-exception").sum()),
            "silently_wrong": int((outcome == "wrong-result").sum()),
            "valid_rejected": int((outcome == "valid-rejected").sum()),
            "warnings": int(group["warnings"].sum()),
        }

    rows = [
        {"target": target, "kind": kind, **row(group)}
        for (target, kind), group in runs.groupby(["target", "kind"], sort=False)
    ]
    rows.sort(key=lambda r: (TARGETS.index(r["target"]), kinds_for("payload").index(r["kind"])))
    rows.append({"target": "all", "kind": "all", **row(runs)})
    return pd.DataFrame(rows)


def write_results(runs: pd.DataFrame, out: Path, seed: int) -> pd.DataFrame:
    table = summarise(runs)
    schemes = runs.groupby(["target", "scheme"]).size().rename("cases").reset_index()
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "payload_fuzz.csv", index=False)
    bad = runs[runs.apply(failed, axis=1)]
    text = [
        "# Payload fuzz\n",
        f"`python -m benchmarks.payload_fuzz --cases {len(runs)} --seed {seed}`: valid buffers "
        "and payloads, one mutation each, decoded (see the module docstring). errors: "
        "PayloadError; ok: the original back; altered: a valid decode of a mutated valid input; "
        f"limits {TIME_LIMIT_S:g} s and {MEMORY_LIMIT_BYTES // 2**20} MB (tracemalloc peak) a "
        f"decode. Failed cases: {len(bad)}.\n",
        markdown_table(table),
        "MB: 2^20 bytes. warnings: Python warnings raised while decoding (counted, not failures).",
        "\nMutation kinds:\n",
        *(f"- `{kind}`: {note}" for kind, note in KIND_NOTES.items()),
        "\nBuffers by position scheme before the mutation:\n",
        markdown_table(schemes),
    ]
    (out / "payload_fuzz.md").write_text("\n".join(text))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs = run_cases(args.cases, args.seed, progress=True)
    table = write_results(runs, args.out, args.seed)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    bad = runs[runs.apply(failed, axis=1)]
    for _, row in bad.head(20).iterrows():
        print(
            f"FAILED case {row['case']}: {row['target']} {row['kind']} {row['outcome']} "
            f"{row['seconds']:.3f} s {row['peak_bytes'] / 2**20:.1f} MB {row['detail']}"
        )
    print(f"{len(bad)} of {len(runs)} cases failed; tables in {args.out}")
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
