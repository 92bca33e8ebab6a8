"""Shared by the checkpoint metadata tests: a small model template and mask, archives with any
metadata, and a mapping with one field changed or dropped."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from fedticket.store.checkpoints import META

HASH = "0123456789ab"
DROP = object()  # a case that removes the field
TEMPLATE = {"fc.weight": np.zeros((2, 3), np.float32), "fc.bias": np.zeros(2, np.float32)}
MASK = np.array([[True, False, True], [False, True, False]])


def write_raw(path: Path, arrays: dict[str, np.ndarray], meta: object) -> None:
    """An archive whose metadata is any JSON value (``write_archive`` takes a mapping)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{META: np.frombuffer(json.dumps(meta).encode(), np.uint8)}, **arrays)
    path.write_bytes(buffer.getvalue())


def with_field(mapping: dict, key: str, value: object) -> dict:
    changed = dict(mapping)
    if value is DROP:
        del changed[key]
    else:
        changed[key] = value
    return changed


def nan_at(index: int, shape: tuple[int, ...], value: float) -> np.ndarray:
    array = np.zeros(shape, np.float32)
    array.flat[index] = value
    return array
