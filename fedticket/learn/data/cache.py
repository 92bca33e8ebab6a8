"""A device's own client data, cached on its disk (``--node-config "data-cache=DIR"``).

Flower 1.39 runs a deployed ClientApp in a new process for every message, so without a cache
each message loads the pool and partitions it again: 1.4 to 2.5 s on a 2-core machine, mostly
importing flwr-datasets (issue #24). The first message of a run writes the client's arrays to
one ``.npz`` (atomically: several SuperNodes may share a host); later ones read it back in
milliseconds. The file comes from outside the process, so reading it is a boundary: its size,
its members' declared sizes, the key it was written under, dtypes, shapes, label range and
finite pixels are all checked, and a file that fails any check is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedticket.learn.data.clients import ClientData, client_data
from fedticket.learn.data.keys import DATA_KEYS, _data_key
from fedticket.registry import DATASETS

if TYPE_CHECKING:
    from fedticket.config import RunConfig

log = logging.getLogger("flwr")

CACHE_VERSION = 1
MAX_CACHE_BYTES = 1 << 32  # 4 GiB: above any one client's share of the datasets here
_ARRAYS = ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val")
_ZIP_SLACK = 4096  # a member's .npy header and the zip's own records


class CacheFileError(ValueError):
    """A cache file that cannot be used (it is rebuilt)."""


def cache_key(config: RunConfig, partition_id: int, num_partitions: int) -> str:
    """What the cached arrays depend on: the data keys, the client, and the files of
    ``data-dir`` (size and modification time: replacing a dataset file invalidates it)."""
    key = _data_key(config)
    files = []
    if key.data_dir and Path(key.data_dir).is_dir():
        for entry in sorted(Path(key.data_dir).iterdir()):
            if entry.is_file():
                stat = entry.stat()
                files.append([entry.name, stat.st_size, stat.st_mtime_ns])
    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            "data": {name: getattr(key, name) for name in DATA_KEYS},
            "client": [partition_id, num_partitions],
            "files": files,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def cached_client_data(
    cache_dir: Path, config: RunConfig, partition_id: int, num_partitions: int
) -> ClientData:
    """``client_data``, from ``cache_dir`` when a sound file for this key is there; otherwise
    built and written there (a cache that cannot be written is logged, not fatal)."""
    key = cache_key(config, partition_id, num_partitions)
    path = Path(cache_dir) / f"client-{partition_id}-of-{num_partitions}-{key[:16]}.npz"
    if path.exists():
        try:
            return read_cache(path, key, config, partition_id)
        except CacheFileError as exc:
            log.warning("fedticket client: data cache %s is unusable (%s); rebuilding", path, exc)
    data = client_data(config, partition_id, num_partitions)
    try:
        write_cache(path, key, data)
    except OSError as exc:
        log.warning("fedticket client: cannot write the data cache %s (%s)", path, exc)
    return data


def write_cache(path: Path, key: str, data: ClientData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            np.savez(
                handle,
                key=np.frombuffer(key.encode(), np.uint8),
                **{name: getattr(data, name) for name in _ARRAYS},
            )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_cache(path: Path, key: str, config: RunConfig, partition_id: int) -> ClientData:
    """The arrays of a cache file, every check passed; ``CacheFileError`` otherwise."""
    try:
        size = path.stat().st_size
        if size > MAX_CACHE_BYTES:
            raise CacheFileError(f"{size} bytes, more than {MAX_CACHE_BYTES}")
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info.file_size for info in archive.infolist()}
        expected = {f"{name}.npy" for name in ("key", *_ARRAYS)}
        if set(members) != expected:
            raise CacheFileError(f"members {sorted(members)}, expected {sorted(expected)}")
        if sum(members.values()) > size + _ZIP_SLACK * len(members):
            raise CacheFileError("members declare more bytes than the file holds")
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in ("key", *_ARRAYS)}
    except CacheFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CacheFileError(f"unreadable: {exc}") from exc
    if arrays.pop("key").tobytes() != key.encode():
        raise CacheFileError("written for another configuration")
    spec = DATASETS[config.dataset]
    for split in ("train", "test", "val"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.float32 or x.ndim != 4 or x.shape[1:] != tuple(spec.input_shape):
            raise CacheFileError(f"x_{split} is {x.dtype} {x.shape}")
        if y.dtype != np.int64 or y.shape != (len(x),):
            raise CacheFileError(f"y_{split} is {y.dtype} {y.shape} for {len(x)} images")
        if len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
            raise CacheFileError(f"y_{split} has labels outside 0..{spec.num_classes - 1}")
        if not np.isfinite(x).all():
            raise CacheFileError(f"x_{split} has non-finite pixels")
    return ClientData(partition_id, *(arrays[name] for name in _ARRAYS))
