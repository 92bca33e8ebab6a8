"""The CELL benchmark's two cost measures on hand-made tables (closed form)."""

from __future__ import annotations

import math

import pandas as pd

from benchmarks.cell import modelled_seconds, to_target
from fedticket.algorithms.cell import simulated_slowdowns


def _run_dir(tmp_path):
    pd.DataFrame({"round": [1, 2, 3], "served_accuracy": [0.5, 0.9, 0.95]}).to_parquet(
        tmp_path / "rounds.parquet"
    )
    comm = pd.DataFrame(
        {
            "round": [1, 1, 1, 1, 1, 2, 3],
            "kind": ["train"] * 7,
            "direction": ["down", "down", "down", "up", "up", "down", "down"],
            "channel": ["broadcast", "unicast", "unicast", "unicast", "unicast"] + ["unicast"] * 2,
            "partition_id": [-1, 0, 1, 0, 1, 0, 0],
            "transfer_seconds": [0.5, 0.0, 0.0, 0.2, 0.3, 0.0, 0.0],
            "message_bytes": [1_000_000, 10, 10, 200_000, 300_000, 2_000_000, 5_000_000],
        }
    )
    comm.to_parquet(tmp_path / "comm.parquet")
    clients = pd.DataFrame(
        {
            "round": [1, 1],
            "phase": ["train", "train"],
            "status": ["ok", "ok"],
            "partition_id": [0, 1],
            "num_examples": [100, 100],
        }
    )
    clients.to_parquet(tmp_path / "clients.parquet")
    return tmp_path


def test_bytes_and_rounds_until_the_target(tmp_path) -> None:
    run_dir = _run_dir(tmp_path)
    reached = to_target(run_dir, 0.9)  # first reached in round 2: rounds 1 and 2 counted
    assert reached == {"rounds_to_target": 2, "MB_to_target": (1_500_020 + 2_000_000) / 1e6}
    never = to_target(run_dir, 0.99)
    assert math.isnan(never["rounds_to_target"]) and math.isnan(never["MB_to_target"])


def test_modelled_wall_time_waits_for_the_slowest_or_stops_at_the_deadline(tmp_path) -> None:
    run_dir = _run_dir(tmp_path)
    config = {
        "min-available-clients": 2,
        "seed": 1,
        "cell-slow-share": 0.5,
        "cell-slowdown": 2.0,
        "local-epochs": 1,
        "cell-samples-per-second": 100.0,
    }
    slow = simulated_slowdowns(2, 1, 0.5, 2.0)
    # broadcast 0.5 s + 100 samples / 100 per s x slowdown + upload
    times = [0.5 + slow[0] + 0.2, 0.5 + slow[1] + 0.3]
    assert math.isclose(modelled_seconds(run_dir, config), max(times))
    assert math.isclose(modelled_seconds(run_dir, config | {"cell-deadline": 2.0}), 2.0)
