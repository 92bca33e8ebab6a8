"""Run directories and atomic table writes.

A run writes ``<output-root>/<algorithm>/<config-hash>/`` holding ``config.json``,
``rounds.parquet``, ``clients.parquet``, ``comm.parquet`` and, for algorithms with per-client
masks, ``masks.parquet`` (each client's current mask, bit-packed). Every file is written to a
temporary name in the same directory and renamed over the old one, so a killed run leaves each
file either at its previous complete state or at its new one, never half-written.
``status.json`` says whether the run is ``running``, ``completed`` or ``failed`` (and why), so a
script can tell a finished run from one a bad client, value or file stopped.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas loads on first use: a ClientApp process never needs it (0.2 s)
    import pandas as pd

TABLES = ("rounds", "clients", "comm", "masks")
STATUS_FILE = "status.json"
RUN_STATUSES = ("running", "completed", "failed")
ENV_OUTPUT_ROOT = "FEDTICKET_OUTPUT_ROOT"
ENVIRONMENT_KEY = "environment"  # config.json's record of the machine and packages
#: ``<output-root>/<algorithm>/latest``: a link to that algorithm's most recently started run
LATEST = "latest"


def resolve_output_root(configured: str) -> Path:
    """Where runs go: the ``output-root`` key, else ``$FEDTICKET_OUTPUT_ROOT``, else
    ``~/fedticket-runs``. Always absolute: under ``flwr run`` the ServerApp's working directory
    is the SuperLink's, not the project's."""
    chosen = configured or os.environ.get(ENV_OUTPUT_ROOT, "") or "~/fedticket-runs"
    return Path(chosen).expanduser().resolve()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDirectory:
    """One run's results folder."""

    def __init__(self, root: Path, algorithm: str, config_hash: str) -> None:
        self.path = Path(root) / algorithm / config_hash

    def write_config(
        self, config: Mapping[str, Any], environment: Mapping[str, Any] | None = None
    ) -> None:
        """``config.json``: the resolved config and, under ``environment``, the machine and
        package versions it ran on (``fedticket.store.environment``)."""
        record = dict(config) | ({ENVIRONMENT_KEY: dict(environment)} if environment else {})
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(self.path / "config.json", text.encode())

    def mark_latest(self) -> bool:
        """Point ``<output-root>/<algorithm>/latest`` at this run: a relative symlink,
        replaced atomically, so a reader sees the old run or the new one, never neither.
        False where the file system takes no symlinks (the results are where they were)."""
        link = self.path.parent / LATEST
        tmp = self.path.parent / f".{LATEST}.{secrets.token_hex(6)}"
        try:
            os.symlink(self.path.name, tmp)
            os.replace(tmp, link)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            return False
        return True

    def write_status(self, status: str, rounds: int, reason: str = "") -> None:
        """``status.json``: ``running``, ``completed`` or ``failed`` (with the reason)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; statuses are {RUN_STATUSES}")
        record = {"status": status, "rounds": rounds, "reason": reason}
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(self.path / STATUS_FILE, text.encode())

    def write_table(self, name: str, frame: pd.DataFrame) -> Path:
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; tables are {TABLES}")
        target = self.path / f"{name}.parquet"
        atomic_write_parquet(target, frame)
        return target


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """One results table, safe to call while its run rewrites it: the file is read in one go
    (pyarrow opens a path more than once, and a rename between two opens tears the read:
    "Page was smaller than expected")."""
    import pandas as pd

    return pd.read_parquet(io.BytesIO(Path(path).read_bytes()), columns=columns)


def load_run(path: str | Path) -> dict[str, Any]:
    """Read a run directory back: ``config``, ``environment`` and ``status`` (dicts) and one
    DataFrame per table present (a run still in progress reads as of its last finished round;
    a directory from before ``status.json`` reads as status "unknown")."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    run: dict[str, Any] = {"environment": config.pop(ENVIRONMENT_KEY, {}), "config": config}
    status_file = path / STATUS_FILE
    run["status"] = (
        json.loads(status_file.read_text()) if status_file.exists() else {"status": "unknown"}
    )
    for name in TABLES:
        file = path / f"{name}.parquet"
        if file.exists():
            run[name] = read_table(file)
    return run


def masks_frame(masks: Mapping[int, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """One row per (partition, tensor): shape, kept count and the mask's bits (np.packbits,
    row-major), so a notebook can rebuild every client's mask and compare them."""
    rows = [
        {
            "partition_id": int(pid),
            "tensor": name,
            "shape": ",".join(str(d) for d in mask.shape),
            "kept": int(np.count_nonzero(mask)),
            "size": int(mask.size),
            "bits": np.packbits(np.asarray(mask, bool).reshape(-1)).tobytes(),
        }
        for pid, tensors in sorted(masks.items())
        for name, mask in tensors.items()
    ]
    columns = ["partition_id", "tensor", "shape", "kept", "size", "bits"]
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def masks_from_frame(frame: pd.DataFrame) -> dict[int, dict[str, np.ndarray]]:
    """Inverse of ``masks_frame``: partition id -> tensor name -> bool mask."""
    masks: dict[int, dict[str, np.ndarray]] = {}
    for row in frame.itertuples(index=False):
        shape = tuple(int(d) for d in row.shape.split(",") if d)
        flat = np.unpackbits(np.frombuffer(row.bits, np.uint8), count=int(row.size))
        masks.setdefault(int(row.partition_id), {})[row.tensor] = flat.astype(bool).reshape(shape)
    return masks


def markdown_table(frame: pd.DataFrame) -> str:
    """A results table as a Markdown table (floats to 4 significant digits)."""

    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines) + "\n"
