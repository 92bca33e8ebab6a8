"""Fed-LTP end to end: ``flwr run`` on the Simulation Engine (stopped by its privacy budget)
and the app on a loopback SuperLink with SuperNodes (the Deployment Engine)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fedticket.simulations.edge.federation import LoopbackFederation
from fedticket.simulations.launcher import launch

pytestmark = pytest.mark.slow

RUN = {
    "algorithm": "fedltp",
    "num-rounds": 2,
    "min-train-clients": 3,
    "min-evaluate-clients": 3,
    "min-available-clients": 3,
    "fedltp-local-steps": 5,
    "fedltp-tickets": 1,
    "fedltp-ticket-epochs": 1,
    "fedltp-submodels": 3,
}


def _privacy_recorded(run_dir) -> pd.DataFrame:
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    assert {"privacy_epsilon", "privacy_rho", "privacy_epsilon_theorem1"} <= set(rounds.columns)
    assert (rounds["privacy_epsilon"].diff().dropna() > 0).all()
    comm = pd.read_parquet(run_dir / "comm.parquet")
    up = comm[(comm["kind"] == "train") & (comm["direction"] == "up")]
    assert (up["payload_bytes"] < up["dense_bytes"] / 2).all()  # sparse sub-models
    return rounds


def test_flwr_run_simulation_stops_at_its_budget(tmp_path) -> None:
    run_config = RUN | {"num-rounds": 50, "fedltp-epsilon": 4.0, "output-root": str(tmp_path)}
    result = launch(run_config, num_supernodes=3, workdir=tmp_path / "launch", timeout=600)
    assert result.returncode == 0 and result.run_dir is not None, result.output[-3000:]
    rounds = _privacy_recorded(result.run_dir)
    assert 1 < len(rounds) < 50 and rounds["privacy_epsilon"].max() <= 4.0
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["status"] == "completed" and "privacy budget" in status["reason"]
    assert "stopped early: privacy budget" in result.output


def test_loopback_deployment(tmp_path) -> None:
    # one round (each deployed message costs seconds); the simulation run above checks the
    # privacy spent growing round by round
    run_config = RUN | {
        "num-rounds": 1,
        "output-root": str(tmp_path / "runs"),
        "round-timeout": 120.0,
    }
    with LoopbackFederation(tmp_path / "edge", 3) as federation:
        result = federation.run(run_config, timeout=400)
    assert result.returncode == 0 and result.run_dir is not None, result.output[-3000:]
    rounds = _privacy_recorded(result.run_dir)
    assert len(rounds) == 1 and rounds["privacy_epsilon"].iloc[0] > 0
