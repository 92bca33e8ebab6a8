"""A run's checkpoint: what the server needs to continue after a round, and where it lives.

The results tables are on disk up to the checkpoint's round already (they are rewritten every
round); the checkpoint adds the global model and the server's state (``Checkpoint``). The
client-state key file lets a resumed run's clients find their state snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedticket.sparse.masks import Masks
from fedticket.store.checkpoints import (
    masks_from_arrays,
    masks_to_arrays,
    split_prefix,
    write_archive,
)
from fedticket.store.results import RunDirectory, atomic_write_bytes
from fedticket.wire.protocol import STATE_KEY

STATE_KEY_FILE = "client-state-key"


@dataclass(frozen=True)
class Checkpoint:
    """What continues a run after ``round``, besides the tables (on disk up to it already)."""

    round: int
    global_arrays: dict[str, np.ndarray]
    masks: dict[int, Masks]  # partition id -> the mask the client trains under
    held: dict[int, str]  # partition id -> mask digest the client is known to hold
    rng: dict  # the client-sampling RNG's bit-generator state
    reference_best: dict[int, float]  # partition id -> the ``reference`` protocol's best-ever
    extra: tuple[dict[str, np.ndarray], dict]  # the algorithm's own (arrays, JSON-able values)

    def write(self, path: Path, config_hash: str, algorithm: str) -> None:
        """One archive (``fedticket.store.checkpoints``); ``read`` undoes it."""
        extra_arrays, extra_meta = self.extra
        arrays = {f"global/{k}": v for k, v in self.global_arrays.items()}
        arrays |= masks_to_arrays("masks", self.masks)
        arrays |= {f"extra/{k}": v for k, v in extra_arrays.items()}
        meta = {
            "round": self.round,
            "config-hash": config_hash,
            "algorithm": algorithm,
            "held": {str(k): v for k, v in self.held.items()},
            "rng": self.rng,
            "reference-best": {str(k): v for k, v in self.reference_best.items()},
            "extra": extra_meta,
        }
        write_archive(path, arrays, meta)

    @classmethod
    def read(cls, arrays: dict[str, np.ndarray], meta: dict) -> Checkpoint:
        """The checkpoint of a loaded archive (checked by ``load_checkpoint``)."""
        return cls(
            round=int(meta["round"]),
            global_arrays=split_prefix(arrays, "global"),
            masks=masks_from_arrays("masks", arrays),
            held={int(k): str(v) for k, v in meta["held"].items()},
            rng=meta["rng"],
            reference_best={int(k): float(v) for k, v in meta.get("reference-best", {}).items()},
            extra=(split_prefix(arrays, "extra"), meta["extra"]),
        )


def checkpoint_path(run_dir: RunDirectory) -> Path:
    return run_dir.path / "checkpoint.npz"


def read_state_key(run_dir: RunDirectory) -> str:
    """The client-state key a run directory already uses ("" when it has none): a resumed
    run's clients find their snapshots under it."""
    try:
        key = (run_dir.path / STATE_KEY_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return key if STATE_KEY.fullmatch(key) else ""


def write_state_key(run_dir: RunDirectory, key: str) -> None:
    """Keep ``key`` in the run directory (unless it is there already) for a resumed run."""
    if read_state_key(run_dir) != key:
        atomic_write_bytes(run_dir.path / STATE_KEY_FILE, key.encode())
