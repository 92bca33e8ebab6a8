"""Payload fuzz: a case is one mutated input with what its unmutated input decodes to; the mask
and tensor cases, and what counts as the same or a valid decode."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.payload_fuzz_inputs import (
    maybe_recode,
    random_mask,
    random_shape,
    random_values,
    scheme_of,
)
from benchmarks.payload_fuzz_mutations import mutate_buffer
from fedticket.wire import codec
from fedticket.wire.codec import Scheme
from fedticket.wire.records import Payload


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


def same_array(a: object, b: object) -> bool:
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
            and all(same_array(a.tensors[k], b.tensors[k]) for k in a.tensors)
            and list(masks_a) == list(masks_b)
            and all(same_array(masks_a[k], masks_b[k]) for k in masks_a)
            and (a.masks is None) == (b.masks is None)
            and a.digest == b.digest
            and a.masks_sent == b.masks_sent
        )
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same_array(x, y) for x, y in zip(a, b, strict=True))
    return same_array(a, b)


def zero_outside(dense: np.ndarray, mask: np.ndarray) -> bool:
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
        and zero_outside(dense, mask)
        and (info.scheme != Scheme.KNOWN or np.array_equal(mask, held))
    )


def mask_case(rng: np.random.Generator, kind: str) -> Case:
    mask = random_mask(rng, random_shape(rng))
    buf = maybe_recode(rng, codec.encode_mask(mask), mask)
    reference = codec.decode_mask(buf)
    bad = mutate_buffer(buf, kind, rng)
    return Case(
        "mask",
        kind,
        scheme_of(buf),
        lambda: codec.decode_mask(bad),
        reference,
        lambda result: _valid_mask(bad, result),
        same_array(reference, mask),
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
        buf = maybe_recode(rng, buf, mask)
    held = None if send_mask else mask
    reference = codec.decode_tensor(buf, held)
    truth = np.ones(shape, bool) if mask is None else mask
    lossless = codec.inspect(buf).value_dtype in ("float32", "float64", "int64", "int32")
    truth_ok = same_array(reference[1], truth) and (
        not lossless or same_array(reference[0], np.where(truth, values, 0).astype(values.dtype))
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
