"""The identity check's runs: six short seeded federations on the tests' loopback grid, and what
each leaves to digest (its results tables, the server's final global model and masks).

This is the one module of the check that imports the code under test.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.supercore.task_identity import TaskIdentity

from benchmarks.identity_digest import arrays_digest, frame_digest

# What the refactor may move: keep these four imports in one place.
from fedticket.config import RunConfig
from fedticket.simulations.server_app import run_federation
from fedticket.strategies.reporting import WALL_CLOCK_COLUMNS
from tests.loopback import LoopbackGrid

MODEL, SERVER_MASKS = "global_model", "server_masks"  # digested like tables, kept as .npz

_SHARED = {
    "num-rounds": 3,
    "partitioner": "iid",
    "seed": 7,
    "client-threads": 1,  # torch's CPU kernels may sum in a thread-count-dependent order
}
_FLASH = {"algorithm": "flash", "model": "mnist-cnn", "density": 0.2, "lr": 0.05}
_FLASH |= {"init-epochs": 1, "init-fraction": 0.5}


@dataclass(frozen=True)
class Run:
    clients: int
    config: dict
    node_configs: dict[int, dict] = field(default_factory=dict)

    def run_config(self, output_root: Path) -> dict:
        quorum = {f"min-{k}-clients": self.clients for k in ("train", "evaluate", "available")}
        return _SHARED | quorum | self.config | {"output-root": str(output_root)}


RUNS: dict[str, Run] = {
    "fedavg": Run(
        3,
        {"algorithm": "fedavg", "model": "mlp", "partitioner": "dirichlet", "dirichlet-alpha": 0.5},
    ),
    "lotteryfl": Run(3, {"algorithm": "lotteryfl", "model": "mnist-cnn", "acc-threshold": -1.0}),
    "fedltn": Run(
        3,
        {
            "algorithm": "fedltn",
            "model": "mnist-cnn-bn",
            "acc-threshold": -1.0,
            "client-state": "disk",
        },
    ),
    "flash-spdst": Run(4, _FLASH | {"flash-mode": "spdst"}),
    "flash-jmwst": Run(4, _FLASH | {"flash-mode": "jmwst"}),
    "flash-hetero": Run(
        4,
        _FLASH | {"flash-mode": "hetero"},
        {pid: {"device-class": "pi4" if pid < 2 else "jetson"} for pid in range(4)},
    ),
    # the threshold lets some users pass and others straggle; the link model prices broadcasts
    "cell": Run(
        4,
        {
            "algorithm": "cell",
            "model": "mnist-cnn",
            "cell-threshold": 0.12,
            "link-down-mbps": 20.0,
            "link-up-mbps": 2.0,
        },
    ),
}


@dataclass
class Outcome:
    seconds: float = float("nan")
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # table -> the run's parquet file
    error: str = ""

    def entries(self) -> dict[str, dict]:
        entries = {
            name: {"rows": len(f), "columns": list(map(str, f.columns)), "sha256": frame_digest(f)}
            for name, f in self.tables.items()
        }
        for name, arrays in self.arrays.items():
            entries[name] = {"rows": len(arrays), "columns": sorted(arrays)}
            entries[name]["sha256"] = arrays_digest(arrays)
        return entries


def comparable(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    return frame.drop(columns=[c for c in frame.columns if c in WALL_CLOCK_COLUMNS])


def server_masks(strategy) -> dict[str, np.ndarray]:
    """``strategy.masks`` (partition id -> layer -> bool array) as ``"pid/layer"`` keys, plus
    FLASH's consensus mask (``strategy.consensus``, all SPDST has) as ``"consensus/layer"``."""
    arrays = {
        f"{pid}/{layer}": np.asarray(mask)
        for pid, masks in strategy.masks.items()
        for layer, mask in (masks or {}).items()
    }
    consensus = getattr(strategy, "consensus", None) or {}
    return arrays | {f"consensus/{layer}": np.asarray(m) for layer, m in consensus.items()}


def run_one(name: str, work: Path) -> Outcome:
    spec = RUNS[name]
    config = spec.run_config(work / name / "runs")
    os.environ["FEDTICKET_STATE_HOME"] = str(work / name / "client-state")
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1  # as a ServerApp's
    started = time.perf_counter()
    try:
        grid = LoopbackGrid(spec.clients, config, node_configs=spec.node_configs)
        strategy = run_federation(grid, RunConfig.from_run_config(config))
    except Exception:
        return Outcome(time.perf_counter() - started, error=traceback.format_exc(limit=8))
    outcome = Outcome(time.perf_counter() - started)
    for path in sorted(Path(strategy.run_dir.path).glob("*.parquet")):
        outcome.files[path.stem] = path
        outcome.tables[path.stem] = comparable(path)
    model = strategy.global_model() or {}
    outcome.arrays[MODEL] = {k: np.asarray(v) for k, v in model.items()}
    outcome.arrays[SERVER_MASKS] = server_masks(strategy)
    return outcome


def run_all(names: Iterable[str], work: Path) -> dict[str, Outcome]:
    outcomes = {}
    saved = os.environ.get("FEDTICKET_STATE_HOME")
    try:
        for name in names:
            outcomes[name] = outcome = run_one(name, work)
            status = "FAILED" if outcome.error else "ok"
            print(f"{name:13s} {outcome.seconds:6.1f} s  {status}", flush=True)
    finally:
        if saved is None:
            os.environ.pop("FEDTICKET_STATE_HOME", None)
        else:
            os.environ["FEDTICKET_STATE_HOME"] = saved
    return outcomes


def code_root() -> Path:
    """Where the code under test was imported from (a worktree's, not an installed copy)."""
    return Path(sys.modules[run_federation.__module__].__file__).resolve().parents[1]
