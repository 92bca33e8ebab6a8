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

Modules:

- ``registry``: ``DataError``, ``Pool``, the ``DATASETS`` and ``PARTITIONERS`` registries.
- ``datasets``: the dataset loaders and ``load_pool``, the per-process pool cache.
- ``keys``: ``DATA_KEYS``, the run-config keys that shape the data, and the cache key of them.
- ``holdout``: the held-out test pool, ``label_quotas`` and each client's local test draw.
- ``partitions``: the partitioners (iid, dirichlet, shards, sampled), ``partition`` and
  ``client_share``.
- ``clients``: ``ClientData``, ``client_indices`` and the cached ``client_data``.
- ``global_holdout``: the server's global test set and its public data (``public-fraction``).

No module is named ``test_*`` or ``*_test``: Flower leaves such files out of the app bundle.
"""

from fedticket.learn.data.clients import ClientData, client_data, client_indices, split_validation
from fedticket.learn.data.datasets import load_mnist_idx, load_pool, read_idx
from fedticket.learn.data.global_holdout import global_test_indices, global_test_set, public_set
from fedticket.learn.data.holdout import label_quotas, split_pool, split_test_pool, split_train_test
from fedticket.learn.data.partitions import partition
from fedticket.learn.data.registry import DATASETS, PARTITIONERS, DataError

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "ClientData",
    "DataError",
    "client_data",
    "client_indices",
    "global_test_indices",
    "global_test_set",
    "label_quotas",
    "load_mnist_idx",
    "load_pool",
    "partition",
    "public_set",
    "read_idx",
    "split_pool",
    "split_test_pool",
    "split_train_test",
    "split_validation",
]
