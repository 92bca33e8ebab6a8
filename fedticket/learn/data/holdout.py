"""Local test sets: the held-out test pool, label quotas, and each client's test draw."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedticket.learn.data.datasets import load_pool

if TYPE_CHECKING:
    from fedticket.config import RunConfig


def split_test_pool(labels: np.ndarray, config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train pool, test pool) indices into the dataset pool.

    ``local-test="label-pool"``: ``test-pool-fraction`` of every class is held out (stratified,
    seeded) before any client gets an image, as LotteryFL and FedLTN hold out the dataset's test
    split; clients are partitioned from the rest. ``"split"``: no test pool, every image goes
    to the partitioner (each client then holds out its own ``test-fraction``). The server's
    public data (``public-fraction``, ``split_pool``) is never in the train pool."""
    train, test, _public = split_pool(labels, config)
    return train, test


def split_pool(labels: np.ndarray, config: RunConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train pool, test pool, public pool): ``split_test_pool``'s test pool first, then
    ``public-fraction`` (``RunConfig.public_share``) of every class of the rest held out as the
    server's labelled public
    data (Fed-LTP's D_pub, arXiv 2305.01387 section 4.1; no second data set can be downloaded
    here, so it is a disjoint share of this one). Without public data the train pool is what it
    was before the key existed."""
    everything = np.arange(len(labels))
    test = _stratified_share(labels, everything, config.test_pool_fraction, [config.seed, 0x7E57])
    if config.local_test != "label-pool":
        test = everything[:0]
    rest = np.setdiff1d(everything, test, assume_unique=True)
    public = _stratified_share(labels, rest, config.public_share, [config.seed, 0x9B1C])
    return np.setdiff1d(rest, public, assume_unique=True), test, public


def _stratified_share(
    labels: np.ndarray, among: np.ndarray, fraction: float, seed: list[int]
) -> np.ndarray:
    """``fraction`` of every class of the ``among`` indices (rounded per class), seeded."""
    if fraction <= 0 or len(among) == 0:
        return among[:0]
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels[among]):
        members = rng.permutation(among[labels[among] == label])
        held.append(members[: round(fraction * len(members))])
    return np.sort(np.concatenate(held))


@functools.lru_cache(maxsize=4)
def _pool_splits(config: RunConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``split_pool`` of the configured pool, once per data config (every client of an actor
    and the server's global test set reuse it; callers must not change it in place)."""
    pool = load_pool(config.dataset, config.data_dir, config.download)
    return split_pool(pool.y, config)


def _pool_split(config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train pool, test pool) of ``_pool_splits``."""
    train, test, _public = _pool_splits(config)
    return train, test


def split_train_test(
    indices: np.ndarray, test_fraction: float, seed: int, partition_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle one client's share and hold out ``test_fraction`` (at least one sample when it
    has two or more) as its local test set."""
    shuffled = np.random.default_rng([seed, partition_id]).permutation(indices)
    n_test = max(1, round(test_fraction * len(shuffled))) if len(shuffled) >= 2 else 0
    return shuffled[n_test:], shuffled[:n_test]


def label_quotas(
    train_labels: np.ndarray, size: int, available: Mapping[int, int] | None = None
) -> dict[int, int]:
    """How many test images of each label a client of ``train_labels`` gets: ``size`` split in
    proportion to its label counts, largest remainders first (ties to the smaller label), so
    the quotas sum to the total exactly. With ``available`` (images per label in the pool) the
    total shrinks to the largest one whose quotas all fit, so the proportions hold even where
    the pool runs short (a client of 90 % one label gets fewer images, not a flatter mix)."""
    classes, counts = np.unique(train_labels, return_counts=True)
    if available is not None:  # a label the pool lacks cannot be tested: leave it out
        keep = np.array([available.get(int(c), 0) > 0 for c in classes], dtype=bool)
        classes, counts = classes[keep], counts[keep]
    if len(classes) == 0:
        return {}
    total = size
    if available is not None:
        fits = [
            available.get(int(c), 0) * counts.sum() / n
            for c, n in zip(classes, counts, strict=True)
        ]
        total = min(size, int(np.ceil(min(fits))))
    while True:
        exact = total * counts / counts.sum()
        quotas = np.floor(exact).astype(int)
        order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - quotas[i]), classes[i]))
        for i in order[: total - int(quotas.sum())]:
            quotas[i] += 1
        if available is None or all(
            q <= available.get(int(c), 0) for c, q in zip(classes, quotas, strict=True)
        ):
            return {int(c): int(q) for c, q in zip(classes, quotas, strict=True)}
        total -= 1


def label_pool_test(
    labels: np.ndarray,
    test_pool: np.ndarray,
    train_labels: np.ndarray,
    size: int,
    seed: int,
    partition_id: int,
) -> np.ndarray:
    """A client's local test set drawn from the held-out ``test_pool`` with the client's own
    label distribution (LotteryFL's label blocks of the global test set, made proportional):
    ``label_quotas`` images per label, without replacement, fewer in all where the pool runs
    short of one label. Clients with the same labels share test images, as in LotteryFL."""
    rng = np.random.default_rng([seed, partition_id, 0x7E57])
    pool_labels = labels[test_pool]
    pool_classes, pool_counts = np.unique(pool_labels, return_counts=True)
    available = dict(zip(pool_classes.tolist(), pool_counts.tolist(), strict=True))
    chosen = []
    for label, quota in label_quotas(train_labels, size, available).items():
        candidates = test_pool[pool_labels == label]
        chosen.append(rng.choice(candidates, size=quota, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else test_pool[:0]
