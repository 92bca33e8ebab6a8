"""Payload fuzz: the valid inputs (shapes, masks, values, small models) and buffers recoded
under a position scheme the encoder would not pick, so that every position decoder is reached."""

from __future__ import annotations

import numpy as np

from fedticket.wire import codec
from fedticket.wire.buffer import assemble, pack_header
from fedticket.wire.codec import Scheme
from fedticket.wire.golomb import best_golomb, kept_gaps
from fedticket.wire.positions import Choice, encode_positions

DENSITIES = (0.005, 0.02, 0.05, 0.1, 0.2, 0.3, 0.38, 0.45, 0.5, 0.55, 0.62, 0.8, 0.95, 0.99)
ROW_LENGTHS = (1, 2, 3, 5, 9, 25, 63, 64, 65, 100, 200, 576)


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


def maybe_recode(rng: np.random.Generator, buf: bytes, mask: np.ndarray) -> bytes:
    kept = int(mask.sum())
    if not 0 < kept < mask.size or rng.random() < 0.6:
        return buf
    schemes = [Scheme.BITMAP, Scheme.GOLOMB, Scheme.ENUM]
    if mask.ndim >= 2:
        schemes.append(Scheme.ENUM_ROWS)
    return recode_positions(buf, mask, schemes[int(rng.integers(len(schemes)))], rng.random() < 0.5)


def scheme_of(buf: bytes) -> str:
    return codec.inspect(buf).scheme.name
