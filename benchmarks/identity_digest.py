"""The identity check's canonical bytes: exact digests of results tables and named arrays, and
the first cell or element where two of them differ.

A table's digest is sha256 over its row count, column names, dtypes and each cell's canonical
bytes (numbers as their bit patterns, every NaN as one pattern, -0.0 kept apart from 0.0,
strings as UTF-8); a set of named arrays is digested by name, dtype, shape and bits.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


# ------------------------------------------------------------------ canonical bytes
def canonical_array(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy whose NaNs all have one bit pattern (NaN payloads and signs are
    noise: the same computation may produce either)."""
    array = np.ascontiguousarray(array)
    if array.dtype.kind in "fc" and np.isnan(array).any():
        array = array.copy()
        if array.dtype.kind == "c":
            real, imag = array.real.copy(), array.imag.copy()
            real[np.isnan(real)], imag[np.isnan(imag)] = np.nan, np.nan
            array = real + 1j * imag
        else:
            array[np.isnan(array)] = np.nan
    return array


def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


def _value_bytes(value: object) -> bytes:
    """One cell of an object column, tagged by type so ``1``, ``1.0`` and ``"1"`` differ."""
    if value is None or value is pd.NA or value is pd.NaT:
        return b"N"
    if isinstance(value, (bool, np.bool_)):
        return b"B" + (b"1" if value else b"0")
    if isinstance(value, (int, np.integer)):
        return b"I" + _length_prefixed(str(int(value)).encode())
    if isinstance(value, (float, np.floating)):
        return b"F" + canonical_array(np.array([value], dtype=np.float64)).tobytes()
    if isinstance(value, str):
        return b"S" + _length_prefixed(value.encode("utf-8"))
    if isinstance(value, bytes):
        return b"Y" + _length_prefixed(value)
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return b"L" + _length_prefixed(b"".join(_value_bytes(v) for v in value.tolist()))
        return b"A" + _array_bytes(value)
    if isinstance(value, (list, tuple)):
        return b"L" + _length_prefixed(b"".join(_value_bytes(v) for v in value))
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return b"D" + _length_prefixed(
            b"".join(_value_bytes(str(k)) + _value_bytes(v) for k, v in items)
        )
    raise TypeError(f"no canonical bytes for a {type(value).__name__} cell ({value!r})")


def _array_bytes(array: np.ndarray) -> bytes:
    array = canonical_array(array)
    header = f"{array.dtype.str}{array.shape}".encode()
    return _length_prefixed(header) + _length_prefixed(array.tobytes())


def column_cells(series: pd.Series) -> list[bytes]:
    """Each cell's canonical bytes: numeric numpy columns by their exact bit patterns, the rest
    (strings, lists, nullable extension types) cell by cell."""
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "biufcmM":
        array = canonical_array(series.to_numpy())
        width = array.dtype.itemsize
        data = array.tobytes()
        return [data[i : i + width] for i in range(0, len(data), width)]
    return [_value_bytes(v) for v in series.to_numpy(dtype=object)]


def frame_digest(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256(_length_prefixed(str(len(frame)).encode()))
    for name in frame.columns:
        digest.update(_length_prefixed(str(name).encode()))
        digest.update(_length_prefixed(str(frame[name].dtype).encode()))
        for cell in column_cells(frame[name]):
            digest.update(_length_prefixed(cell))
    return digest.hexdigest()


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(_length_prefixed(name.encode()) + _array_bytes(np.asarray(arrays[name])))
    return digest.hexdigest()


# ------------------------------------------------------------------ first differences
def first_difference_in_frames(ref: pd.DataFrame, now: pd.DataFrame) -> str:
    if list(ref.columns) != list(now.columns):
        gone = [c for c in ref.columns if c not in now.columns]
        new = [c for c in now.columns if c not in ref.columns]
        if gone or new:
            return f"columns only in reference {gone}, only now {new}"
        return f"column order: reference {list(ref.columns)}, now {list(now.columns)}"
    if len(ref) != len(now):
        return f"rows: reference {len(ref)}, now {len(now)}"
    for name in ref.columns:
        if str(ref[name].dtype) != str(now[name].dtype):
            return f"column {name!r}: dtype {ref[name].dtype} -> {now[name].dtype}"
        cells = zip(column_cells(ref[name]), column_cells(now[name]), strict=True)
        row = next((i for i, (a, b) in enumerate(cells) if a != b), None)
        if row is not None:
            was, is_ = ref[name].iloc[row], now[name].iloc[row]
            return f"column {name!r}, row {row}: {_show(was)} -> {_show(is_)}"
    return "digest differs but no cell does (canonicalisation changed?)"


def _element_bits(array: np.ndarray) -> np.ndarray:
    """One row of raw bytes per element (C order)."""
    flat = canonical_array(array).reshape(-1)
    return flat.view(np.uint8).reshape(flat.size, flat.dtype.itemsize)


def first_difference_in_arrays(ref: dict[str, np.ndarray], now: dict[str, np.ndarray]) -> str:
    if sorted(ref) != sorted(now):
        gone, new = sorted(set(ref) - set(now)), sorted(set(now) - set(ref))
        return f"arrays only in reference {gone}, only now {new}"
    for name in sorted(ref):
        a, b = np.asarray(ref[name]), np.asarray(now[name])
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{name}: {a.dtype}{a.shape} -> {b.dtype}{b.shape}"
        differ = np.flatnonzero((_element_bits(a) != _element_bits(b)).any(axis=1))
        if len(differ):
            index = np.unravel_index(differ[0], a.shape)
            where = ", ".join(map(str, index))
            change = f"{_show(a[index])} -> {_show(b[index])}"
            return f"{name}[{where}]: {change} ({len(differ)} of {a.size} differ)"
    return "digest differs but no element does (canonicalisation changed?)"


def _show(value: object) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)
