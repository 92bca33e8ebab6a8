"""Server checkpoints and client state snapshots: numpy archives written atomically.

A checkpoint is one ``.npz`` (a zip with a CRC per member, so corruption is detected) holding
named arrays and a JSON document (``__meta__``) with the round it completes, the config hash it
belongs to and whatever else the strategy keeps. Nothing is pickled: a checkpoint cannot run
code when loaded.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedticket.results import atomic_write_bytes

META = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def write_archive(path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """``arrays`` and ``meta`` into ``path``, atomically (the old file stays until the new one
    is complete)."""
    if META in arrays:
        raise ValueError(f"array name {META!r} is reserved")
    buffer = io.BytesIO()
    blob = np.frombuffer(json.dumps(dict(meta), sort_keys=True).encode(), np.uint8)
    np.savez(buffer, **{META: blob}, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())


def read_archive(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of an archive; ``CheckpointError`` naming the file if it is damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        meta = json.loads(arrays.pop(META).tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    return arrays, meta


def load_checkpoint(path: Path, config_hash: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A server checkpoint for this config, or ``CheckpointError`` saying what to do."""
    fix = "delete it, or start fresh with --run-config 'resume=false'"
    try:
        arrays, meta = read_archive(path)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {exc}; {fix}") from None
    if meta.get("config-hash") != config_hash:
        raise CheckpointError(
            f"checkpoint {path} belongs to config {meta.get('config-hash')!r}, "
            f"not {config_hash!r}; {fix}"
        )
    if not isinstance(meta.get("round"), int):
        raise CheckpointError(f"checkpoint {path} names no completed round; {fix}")
    return arrays, meta


def split_prefix(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays stored under ``prefix/`` with the prefix removed."""
    start = f"{prefix}/"
    return {k[len(start) :]: v for k, v in arrays.items() if k.startswith(start)}


def masks_to_arrays(
    prefix: str, masks: Mapping[int, Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    return {
        f"{prefix}/{pid}/{name}": np.asarray(mask, bool)
        for pid, tensors in masks.items()
        for name, mask in tensors.items()
    }


def masks_from_arrays(
    prefix: str, arrays: Mapping[str, np.ndarray]
) -> dict[int, dict[str, np.ndarray]]:
    masks: dict[int, dict[str, np.ndarray]] = {}
    for key, value in split_prefix(arrays, prefix).items():
        pid, name = key.split("/", 1)
        masks.setdefault(int(pid), {})[name] = value.astype(bool)
    return masks
