"""Bounds every run-config value is checked against: far above any real run, low enough that a
typo (an extra digit, a seed pasted from elsewhere) is caught at the config boundary instead of
as a hang, an allocation or an overflow inside numpy, torch or Flower."""

from __future__ import annotations

# Flower carries run-config ints as int64 (TOML's integers too); a Python dict can hold more.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_SEED = 2**32 - 1  # what every seeding API takes (numpy's RandomState, which sklearn and
# older code use, stops here); seed + small offsets (FLASH: seed + 1) stay far inside torch's
# uint64 and Flower's int64
MAX_ROUNDS = 1_000_000  # one row per round in the tables; days even at the fastest round here
MAX_EPOCHS = 10_000  # passes over a client's data per round: beyond this a round never ends
MAX_SAMPLES = 100_000_000  # images: over 100 x the largest dataset here (EMNIST byclass,
# 814k); keeps products of shards, sizes and batches far inside int64 and numpy's index range
MAX_CLIENTS = 1_000_000  # nodes: 1,000 x the largest simulation measured (benchmarks/scale)
MAX_RETRIES = 100  # each retry is a whole round; more hides a broken federation
MAX_THREADS = 1024  # torch.set_num_threads takes a C int; threads beyond the cores only slow
MAX_LR = 10.0  # client and server step sizes here are 0.01-1: a larger one is a typo
MAX_TIMEOUT_S = 43_200.0  # Flower's default message TTL (flwr.app.constants.DEFAULT_TTL, 12 h):
# a reply cannot arrive later, so a longer wait, or inf, only delays the failure
MAX_LATENCY_MS = 60_000.0  # one minute: 200 x a geostationary satellite hop
LINK_MBPS = (1e-3, 1e6)  # 1 kbit/s to 1 Tbit/s; slower would make link-model seconds overflow
# Linux's limits: a path of PATH_MAX bytes (with its NUL) and components of NAME_MAX bytes
PATH_MAX_BYTES, NAME_MAX_BYTES = 4096, 255
# torch's device index is an int8: "cuda:128" silently becomes another index
DEVICE_INDEX_MAX = 127
