"""The server's own data: the global test set (the test pool, or every client's local test
split pooled) and the public data (``public-fraction``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedticket.learn.data.clients import client_indices
from fedticket.learn.data.datasets import load_pool
from fedticket.learn.data.holdout import _pool_split, _pool_splits
from fedticket.learn.data.keys import _data_key
from fedticket.learn.data.registry import DataError

if TYPE_CHECKING:
    from fedticket.config import RunConfig


def global_test_indices(config: RunConfig, num_partitions: int) -> np.ndarray:
    """The held-out test set of all classes that the server scores its global model on: the
    test pool (``label-pool``), or every client's local test split pooled (``split``; no image
    of it is trained on)."""
    if num_partitions < 1:
        raise DataError(f"num-partitions must be >= 1, got {num_partitions}")
    config = _data_key(config)
    if config.local_test == "label-pool":
        return _pool_split(config)[1]
    tests = [client_indices(config, pid, num_partitions)[2] for pid in range(num_partitions)]
    return np.sort(np.concatenate(tests))


def global_test_set(config: RunConfig, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ``global_test_indices``."""
    pool = load_pool(config.dataset, config.data_dir, config.download)
    index = global_test_indices(config, num_partitions)
    return pool.x[index], pool.y[index]


def public_set(config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the server's labelled public data (``public-fraction`` of every class, held
    out before partitioning: no client holds an image of it, and it is not the test pool)."""
    config = _data_key(config)
    index = _pool_splits(config)[2]
    if len(index) == 0:
        raise DataError("no public data: set public-fraction > 0")
    pool = load_pool(config.dataset, config.data_dir, config.download)
    return pool.x[index], pool.y[index]
