"""Which run-config keys shape the data set, and the cache key made of them."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedticket.config import RunConfig


def _data_key(config: RunConfig) -> RunConfig:
    """``config`` with every key that does not shape the data set to its default, so that
    runs differing only in, say, ``lr`` share one cached partition."""
    defaults = type(config)()
    values = {name: getattr(config, name) for name in DATA_KEYS}
    return dataclasses.replace(defaults, **values | {"public_fraction": config.public_share})


#: the run-config attributes that decide which images each client holds
DATA_KEYS = (
    "dataset",
    "data_dir",
    "download",
    "partitioner",
    "dirichlet_alpha",
    "shards_per_client",
    "shard_size",
    "unbalance_rate",
    "samples_per_client",
    "test_fraction",
    "val_fraction",
    "local_test",
    "test_pool_fraction",
    "local_test_size",
    "public_fraction",
    "seed",
)
