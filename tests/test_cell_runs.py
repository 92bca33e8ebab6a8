"""CELL end to end: ``flwr run`` on the Simulation Engine and the app on a loopback SuperLink
with SuperNodes (the Deployment Engine), with the broadcast counted once and a slow node late."""

from __future__ import annotations

import pandas as pd
import pytest

from fedticket.simulations.edge.federation import LoopbackFederation
from fedticket.simulations.launcher import launch

pytestmark = pytest.mark.slow

RUN = {
    "algorithm": "cell",
    "num-rounds": 2,
    "min-train-clients": 3,
    "min-evaluate-clients": 3,
    "min-available-clients": 3,
    "local-epochs": 1,
    "link-down-mbps": 20.0,
    "link-up-mbps": 2.0,
}


def _broadcast_counted_once(run_dir) -> pd.DataFrame:
    comm = pd.read_parquet(run_dir / "comm.parquet")
    train_down = comm[(comm["kind"] == "train") & (comm["direction"] == "down")]
    broadcast = train_down[train_down["channel"] == "broadcast"]
    assert broadcast["round"].tolist() == sorted(set(comm.loc[comm["round"] > 0, "round"]))
    assert (train_down.loc[train_down["channel"] == "unicast", "payload_bytes"] == 0).all()
    return comm


def test_flwr_run_simulation(tmp_path) -> None:
    run_config = RUN | {"output-root": str(tmp_path / "runs")}
    result = launch(run_config, num_supernodes=3, workdir=tmp_path / "launch", timeout=600)
    assert result.returncode == 0 and result.run_dir is not None, result.output[-3000:]
    _broadcast_counted_once(result.run_dir)
    rounds = pd.read_parquet(result.run_dir / "rounds.parquet")
    assert {"stragglers", "lottery_steps", "late", "waited_for"} <= set(rounds.columns)


def test_loopback_deployment_with_a_slow_node_past_the_deadline(tmp_path) -> None:
    # 200-odd images x 1 epoch / 1000 per s: about 0.2 s; the slow node's 50 x is about 10 s
    # one round (each deployed message costs seconds): the deadline's effect is per round
    run_config = RUN | {
        "num-rounds": 1,
        "output-root": str(tmp_path / "runs"),
        "cell-deadline": 5.0,
        "cell-slow-share": 0.0,
        "round-timeout": 60.0,
    }
    nodes = {2: {"compute-slowdown": 50.0}}
    with LoopbackFederation(tmp_path / "edge", 3, node_configs=nodes) as federation:
        result = federation.run(run_config, timeout=400)
    assert result.returncode == 0 and result.run_dir is not None, result.output[-3000:]
    _broadcast_counted_once(result.run_dir)
    rounds = pd.read_parquet(result.run_dir / "rounds.parquet")
    assert rounds["late"].tolist() == [1.0] and rounds["waited_for"].tolist() == [2.0]
    assert (rounds["model_round_seconds"] == 5.0).all()
    assert (rounds["model_round_seconds_no_deadline"] > 5.0).all()
