from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fedticket.config import RunConfig
from fedticket.learn.data import (
    PARTITIONERS,
    DataError,
    client_data,
    load_mnist_idx,
    load_pool,
    partition,
    read_idx,
    split_train_test,
    split_validation,
)
from fedticket.learn.data.holdout import _pool_split
from fedticket.learn.data.partitions import client_share


def test_offline_default_is_5000_real_digits_500_per_class() -> None:
    pool = load_pool("mnist-offline")
    assert pool.x.shape == (5000, 1, 28, 28) and pool.x.dtype == np.float32
    assert np.bincount(pool.y).tolist() == [500] * 10
    # normalised with MNIST's mean/std: background pixels map to -0.1307/0.3081
    assert np.isclose(pool.x.min(), -0.1307 / 0.3081, atol=1e-5)


@pytest.mark.parametrize("name", sorted(set(PARTITIONERS) - {"sampled"}))  # sampled: below
def test_partitions_are_disjoint_deterministic_and_cover_clients(name: str) -> None:
    config = RunConfig.from_run_config({"partitioner": name, "seed": 7})
    labels = load_pool("mnist-offline").y
    parts = PARTITIONERS[name](labels, 10, config)
    again = PARTITIONERS[name](labels, 10, config)
    assert len(parts) == 10 and all(len(p) > 0 for p in parts)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    everything = np.concatenate(parts)
    assert len(everything) == len(np.unique(everything)), "a sample sits in two clients"
    other_seed = PARTITIONERS[name](
        labels, 10, RunConfig.from_run_config({"partitioner": name, "seed": 8})
    )
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other_seed, strict=True))


def test_sampled_shares_are_fixed_size_seeded_and_independent_of_the_client_count() -> None:
    """The scale partitioner (#24): a client's share is the same whether there are 10 or
    100,000 clients, computed for it alone, distinct within the client, and drawn from the
    train pool only (never the test pool)."""
    config = RunConfig.from_run_config({"partitioner": "sampled", "samples-per-client": 40})
    alone = client_share(config, 7, 100_000)
    assert len(alone) == 40 == len(np.unique(alone))
    assert np.array_equal(alone, client_share(config, 7, 10))
    assert np.array_equal(alone, partition(config, 10)[7])
    assert not np.array_equal(alone, client_share(config, 8, 10))
    train_pool, test_pool = _pool_split(config)
    assert np.isin(alone, train_pool).all() and not np.isin(alone, test_pool).any()
    reseeded = RunConfig.from_run_config({"partitioner": "sampled", "seed": 1})
    assert not np.array_equal(client_share(reseeded, 7, 10)[:40], alone)
    data = client_data(config, 99_999, 100_000)
    assert len(data.y_train) + len(data.y_val) == 40


def test_sampled_shares_refuse_a_pooled_test_set_and_more_images_than_the_pool() -> None:
    split = RunConfig.from_run_config({"partitioner": "sampled", "local-test": "split"})
    with pytest.raises(DataError, match="label-pool"):
        client_share(split, 0, 10)
    greedy = RunConfig.from_run_config({"partitioner": "sampled", "samples-per-client": 10**6})
    with pytest.raises(DataError, match="samples-per-client=1000000"):
        client_share(greedy, 0, 10)


def test_iid_partition_uses_every_sample_with_balanced_sizes() -> None:
    parts = PARTITIONERS["iid"](load_pool("mnist-offline").y, 10, RunConfig())
    assert sorted(len(p) for p in parts) == [500] * 10


def test_shards_follow_lotteryfl_class_counts_and_unbalance_rule() -> None:
    labels = load_pool("mnist-offline").y
    config = RunConfig.from_run_config(
        {"partitioner": "shards", "shard-size": 20, "shards-per-client": 2}
    )
    parts = PARTITIONERS["shards"](labels, 100, config)
    assert all(len(p) == 40 for p in parts)
    # shards are label-sorted runs: with 500 images per class no shard straddles a class
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    unbalanced = RunConfig.from_run_config({"partitioner": "shards", "unbalance-rate": 0.5})
    assert all(len(p) == 30 for p in PARTITIONERS["shards"](labels, 100, unbalanced))


def test_shards_refuse_more_clients_than_shards() -> None:
    config = RunConfig.from_run_config({"partitioner": "shards", "shard-size": 100})
    with pytest.raises(DataError, match="lower shard-size"):
        PARTITIONERS["shards"](load_pool("mnist-offline").y, 30, config)


def test_dirichlet_small_alpha_skews_labels() -> None:
    labels = load_pool("mnist-offline").y
    skewed = PARTITIONERS["dirichlet"](
        labels, 10, RunConfig.from_run_config({"dirichlet-alpha": 0.1})
    )
    flat = PARTITIONERS["dirichlet"](
        labels, 10, RunConfig.from_run_config({"dirichlet-alpha": 100.0})
    )

    def top_class_share(parts: list[np.ndarray]) -> float:
        return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))

    assert top_class_share(skewed) > 0.4 > top_class_share(flat)


def test_client_split_holds_out_test_fraction_without_overlap() -> None:
    config = RunConfig.from_run_config(
        {"partitioner": "iid", "test-fraction": 0.2, "local-test": "split"}
    )
    indices = partition(config, 10)[3]
    train, test = split_train_test(indices, 0.2, config.seed, 3)
    assert len(train) == 400 and len(test) == 100
    assert sorted(np.concatenate([train, test]).tolist()) == sorted(indices.tolist())
    data = client_data(config, 3, 10)
    pool = load_pool("mnist-offline")
    fit, val = split_validation(train, config.val_fraction)
    assert len(fit) == 360 and len(val) == 40  # LotteryFL's int(0.9 n) / rest
    assert np.array_equal(data.x_test, pool.x[test]) and np.array_equal(data.y_train, pool.y[fit])
    assert np.array_equal(data.y_val, pool.y[val])


def test_partition_id_out_of_range_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"outside 0\.\.9"):
        client_data(RunConfig(), 10, 10)


def test_mnist_idx_reads_the_official_test_set(shared_mnist_dir: Path) -> None:
    pool = load_mnist_idx(str(shared_mnist_dir))
    assert pool.x.shape == (10000, 1, 28, 28)
    assert np.bincount(pool.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_idx_rejects_missing_truncated_and_foreign_files(
    tmp_path: Path, shared_mnist_dir: Path
) -> None:
    with pytest.raises(DataError, match="no MNIST IDX files"):
        load_mnist_idx(str(tmp_path))
    raw = gzip.decompress((shared_mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])
    labels = gzip.decompress((shared_mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(DataError, match="truncated"):
        load_mnist_idx(str(tmp_path))
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(raw)
    )  # same data, other bytes
    with pytest.raises(DataError, match="MD5"):
        load_mnist_idx(str(tmp_path))


def test_read_idx_checks_magic(tmp_path: Path) -> None:
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x03\x04" + bytes(10))
    with pytest.raises(DataError, match="magic"):
        read_idx(bad, 1)
