"""kill -9 in the middle of a round on Flower's simulation engine, then the same command again:
the resumed run ends with the same results as one that was never interrupted."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from fedticket.config import RunConfig
from fedticket.simulations.launcher import launch, processes_of
from fedticket.simulations.processes import kill_pids
from fedticket.store.results import read_table
from fedticket.strategies.reporting import WALL_CLOCK_COLUMNS

pytestmark = pytest.mark.slow
# wall-clock columns, and what depends on Flower's random per-run node ids (their varint
# length changes a message's size by a byte or two)
VARYING = WALL_CLOCK_COLUMNS | {"node_id", "message_bytes", "message_bytes_down",
                                "message_bytes_up"}  # fmt: skip
ORDER = {
    "rounds": ["round"],
    "clients": ["round", "phase", "partition_id"],
    "comm": ["round", "kind", "direction", "partition_id"],
    "masks": ["partition_id", "tensor"],
}


def kill_everything_under(workdir: Path) -> int:
    """SIGKILL every process of one launch: a power cut for that run, nothing else."""
    pids = processes_of(workdir)
    kill_pids(pids)
    return len(pids)


def tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for name, order in ORDER.items():
        frame = pd.read_parquet(run_dir / f"{name}.parquet")
        frame = frame.drop(columns=[c for c in frame if c in VARYING])
        out[name] = frame.sort_values(order, kind="stable").reset_index(drop=True)
    return out


def test_sigkill_mid_round_then_resume_ends_like_an_uninterrupted_run(tmp_path) -> None:
    config = {
        "algorithm": "lotteryfl",
        "num-rounds": 4,
        "acc-threshold": -1.0,
        "client-state": "disk",
        "min-train-clients": 3,
        "min-evaluate-clients": 3,
        "min-available-clients": 3,
    }
    reference = launch(
        config | {"output-root": str(tmp_path / "ra")}, num_supernodes=3, workdir=tmp_path / "w0"
    )
    assert reference.returncode == 0, reference.output[-2000:]

    interrupted = config | {"output-root": str(tmp_path / "rb")}
    run_dir = tmp_path / "rb" / "lotteryfl" / RunConfig.from_run_config(interrupted).config_hash()
    killed: list[int] = []

    def power_cut() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            rounds = run_dir / "rounds.parquet"
            if rounds.exists() and len(read_table(rounds)) >= 2:
                killed.append(kill_everything_under(tmp_path / "w1"))
                return
            time.sleep(0.05)

    cutter = threading.Thread(target=power_cut, daemon=True)
    cutter.start()
    first = launch(interrupted, num_supernodes=3, workdir=tmp_path / "w1", timeout=300)
    cutter.join(timeout=10)
    assert killed and killed[0] > 0 and first.returncode != 0
    assert len(pd.read_parquet(run_dir / "rounds.parquet")) < 4

    resumed = launch(interrupted, num_supernodes=3, workdir=tmp_path / "w2")
    assert resumed.returncode == 0, resumed.output[-2000:]
    assert "resuming" in resumed.output and resumed.run_dir == run_dir
    expected, got = tables(reference.run_dir), tables(run_dir)
    for name in ORDER:
        pd.testing.assert_frame_equal(expected[name], got[name], check_exact=True, obj=name)
