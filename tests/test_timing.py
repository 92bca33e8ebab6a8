"""Where a round's time goes, as the tables record it: the server's wait for replies inside the
round, the clients' whole handler around their SGD, and round ends that only move forward."""

from __future__ import annotations

import pandas as pd
import pytest

from fedticket.config import RunConfig
from fedticket.simulations.server_app import run_federation, tune_polling
from tests.loopback import LoopbackGrid

pytestmark = pytest.mark.usefixtures("flower_task_identity")


def test_round_and_client_timings_nest(tmp_path) -> None:
    run_config = {
        "algorithm": "lotteryfl",
        "num-rounds": 3,
        "partitioner": "iid",
        "min-train-clients": 3,
        "min-evaluate-clients": 3,
        "min-available-clients": 3,
        "output-root": str(tmp_path),
    }
    strategy = run_federation(LoopbackGrid(3, run_config), RunConfig.from_run_config(run_config))
    rounds = pd.read_parquet(strategy.run_dir.path / "rounds.parquet")
    clients = pd.read_parquet(strategy.run_dir.path / "clients.parquet")
    assert (rounds["seconds_clients"] > 0).all()
    assert (rounds["seconds_clients"] <= rounds["seconds"]).all()
    assert rounds["finished_s"].is_monotonic_increasing
    assert (rounds["finished_s"].diff().dropna() >= rounds["seconds"].iloc[1:].to_numpy()).all()
    train = clients[clients["phase"] == "train"]
    assert (train["client_seconds"] >= train["train_seconds"]).all()
    # the loopback grid runs the clients inside the wait, one after another
    per_round = clients.groupby("round")["client_seconds"].sum()
    assert (per_round.to_numpy() <= rounds.set_index("round")["seconds_clients"].to_numpy()).all()


def test_polling_is_tuned_only_where_the_grid_polls_in_memory() -> None:
    class InMemory:
        pull_interval = 0.1

    grid = InMemory()
    tune_polling(grid)
    assert grid.pull_interval == 0.01
    tune_polling(object())  # a grid without the knob is left alone
