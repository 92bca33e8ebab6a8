"""Partitioners (iid, dirichlet, shards, sampled) and the cached split of the pool into clients."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from fedticket.learn.data.datasets import load_pool
from fedticket.learn.data.holdout import _pool_split
from fedticket.learn.data.keys import _data_key
from fedticket.learn.data.registry import PARTITIONERS, DataError, register_partitioner

if TYPE_CHECKING:
    from fedticket.config import RunConfig


def _labels_dataset(labels: np.ndarray, index: np.ndarray | None = None):
    """A HuggingFace ``Dataset`` of labels and pool indices, what flwr-datasets partitions."""
    from datasets import Dataset

    index = np.arange(len(labels)) if index is None else index
    return Dataset.from_dict({"label": labels.tolist(), "index": index.tolist()})


@register_partitioner("iid")
def partition_iid(labels: np.ndarray, num_partitions: int, config: RunConfig) -> list[np.ndarray]:
    """Uniform split of shuffled indices (flwr-datasets' IidPartitioner)."""
    from flwr_datasets.partitioner import IidPartitioner

    shuffled = np.random.default_rng(config.seed).permutation(len(labels))
    partitioner = IidPartitioner(num_partitions=num_partitions)
    partitioner.dataset = _labels_dataset(labels[shuffled], shuffled)
    return [
        np.asarray(partitioner.load_partition(i)["index"], dtype=np.int64)
        for i in range(num_partitions)
    ]


@register_partitioner("dirichlet")
def partition_dirichlet(
    labels: np.ndarray, num_partitions: int, config: RunConfig
) -> list[np.ndarray]:
    """Label skew: each class spread over clients by Dirichlet(alpha) (flwr-datasets').

    ``min_partition_size`` is 10 (flwr-datasets' default) when the pool allows it and drops to
    2 (one train, one test sample) when clients get fewer than 40 samples on average, so that
    many-client runs on the 5,000-image default do not resample forever.
    """
    from flwr_datasets.partitioner import DirichletPartitioner

    min_size = 10 if len(labels) >= 40 * num_partitions else 2
    partitioner = DirichletPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        alpha=config.dirichlet_alpha,
        min_partition_size=min_size,
        seed=config.seed,
    )
    partitioner.dataset = _labels_dataset(labels)
    try:
        parts = [partitioner.load_partition(i)["index"] for i in range(num_partitions)]
    except ValueError as exc:
        raise DataError(
            f"Dirichlet split of {len(labels)} samples into {num_partitions} clients failed "
            f"({exc}); "
            "use fewer clients, a larger dataset or a larger dirichlet-alpha"
        ) from exc
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


@register_partitioner("shards")
def partition_shards(
    labels: np.ndarray, num_partitions: int, config: RunConfig
) -> list[np.ndarray]:
    """LotteryFL's label-shard split: sort by label, cut shards of ``shard-size``, deal
    ``shards-per-client`` shards to each client without replacement.

    Written by hand because flwr-datasets' ShardPartitioner cannot express LotteryFL's
    unbalance rule: a client's first shard is kept whole and every further shard is cut to
    ``int(unbalance-rate * shard-size)``. Deviation from the reference code: a stable sort
    and a seeded RNG (the reference is unseeded, so its splits are not reproducible).
    """
    order = np.argsort(labels, kind="stable")
    num_shards = len(labels) // config.shard_size
    needed = num_partitions * config.shards_per_client
    if needed > num_shards:
        raise DataError(
            f"shards partitioner needs {needed} shards ({num_partitions} clients x "
            f"shards-per-client={config.shards_per_client}) but {len(labels)} samples give "
            f"{num_shards} of shard-size={config.shard_size}; lower shard-size or the client count"
            + (
                f' (local-test="label-pool" holds {config.test_pool_fraction:.0%} of the data '
                "set out as the test pool first)"
                if config.local_test == "label-pool"
                else ""
            )
        )
    rng = np.random.default_rng(config.seed)
    free = np.arange(num_shards)
    further = int(config.unbalance_rate * config.shard_size)
    parts = []
    for _ in range(num_partitions):
        picked = rng.choice(len(free), size=config.shards_per_client, replace=False)
        shards, free = free[picked], np.delete(free, picked)
        pieces = [order[s * config.shard_size : (s + 1) * config.shard_size] for s in shards]
        pieces = [pieces[0]] + [p[:further] for p in pieces[1:]]
        parts.append(np.concatenate(pieces))
    return parts


@register_partitioner("sampled")
def partition_sampled(
    labels: np.ndarray, num_partitions: int, config: RunConfig
) -> list[np.ndarray]:
    """Each client draws ``samples-per-client`` distinct samples of the pool uniformly, on its
    own seed (``sampled_share``). Clients overlap, so this is not a partition; but a client's
    share does not depend on how many clients there are, so it is computed for that client
    alone: the split for runs of 10,000 clients and more (issue #24), whose per-client data,
    and so round time, stays fixed as the registered count grows. Needs the label-pool test
    sets (a pooled ``split`` test set would hold other clients' train images)."""
    return [sampled_share(len(labels), pid, config) for pid in range(num_partitions)]


def sampled_share(pool_size: int, partition_id: int, config: RunConfig) -> np.ndarray:
    """Positions in the train pool of one client's ``sampled`` share (sorted)."""
    if config.local_test != "label-pool":
        raise DataError(
            'the sampled partitioner needs local-test="label-pool": its clients share images, '
            "so a pooled split test set would hold train images"
        )
    if config.samples_per_client > pool_size:
        raise DataError(
            f"samples-per-client={config.samples_per_client} is more than the "
            f"{pool_size} images of the train pool; lower it"
        )
    rng = np.random.default_rng([config.seed, 0x5A, partition_id])
    return np.sort(rng.choice(pool_size, config.samples_per_client, replace=False))


#: partitioners whose share of one client is computed without the others' (O(share) work)
ONE_CLIENT_SHARES = {"sampled": sampled_share}


@functools.lru_cache(maxsize=4)
def _partitions(
    dataset: str, data_dir: str, download: bool, num_partitions: int, config: RunConfig
):
    pool = load_pool(dataset, data_dir, download)
    if config.partitioner not in PARTITIONERS:
        raise DataError(
            f"unknown partitioner '{config.partitioner}'; registered: {', '.join(PARTITIONERS)}"
        )
    train_pool, _test_pool = _pool_split(config)
    parts = PARTITIONERS[config.partitioner](pool.y[train_pool], num_partitions, config)
    return [train_pool[part] for part in parts]


def client_share(config: RunConfig, partition_id: int, num_partitions: int) -> np.ndarray:
    """One client's sample indices into the pool: ``partition(...)[partition_id]``, without
    building the other clients' shares where the partitioner allows it."""
    config = _data_key(config)
    one = ONE_CLIENT_SHARES.get(config.partitioner)
    if one is None:
        return partition(config, num_partitions)[partition_id]
    load_pool(config.dataset, config.data_dir, config.download)  # a dataset error first
    train_pool, _test_pool = _pool_split(config)
    return train_pool[one(len(train_pool), partition_id, config)]


def partition(config: RunConfig, num_partitions: int) -> list[np.ndarray]:
    """Every client's sample indices into the pool (deterministic for a config)."""
    if num_partitions < 1:
        raise DataError(f"num-partitions must be >= 1, got {num_partitions}")
    config = _data_key(config)
    return _partitions(config.dataset, config.data_dir, config.download, num_partitions, config)
