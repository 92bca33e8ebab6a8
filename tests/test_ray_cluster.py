"""Flower's simulation engine on a multi-node Ray cluster (all nodes on this host): the run
joins the cluster named by RAY_ADDRESS and its actors run on a joined node, since the head
node has no CPUs."""

from __future__ import annotations

import pandas as pd
import pytest

from fedticket.simulations.launcher import launch
from fedticket.simulations.ray_cluster import LocalRayCluster

pytestmark = pytest.mark.slow


def test_simulation_runs_its_clients_on_a_joined_ray_node(tmp_path) -> None:
    run_config = {
        "algorithm": "lotteryfl",
        "num-rounds": 2,
        "min-available-clients": 3,
        "min-train-clients": 3,
        "min-evaluate-clients": 3,
        "output-root": str(tmp_path / "runs"),
    }
    with LocalRayCluster(worker_cpus=[2]) as cluster:
        nodes = cluster.alive_nodes()
        assert sorted(node["cpus"] for node in nodes) == [0, 2]
        result = launch(
            run_config, num_supernodes=3, cpus_per_client=1, timeout=300, extra_env=cluster.env()
        )
        assert result.returncode == 0, result.output[-3000:]
        # Flower sized its pool from the cluster (the joined node's 2 CPUs) and its actors are
        # this cluster's workers: a private Ray would have logged them elsewhere
        logs = (cluster.temp_dir / "session_latest" / "logs").glob("worker-*.out")
        actors = [p for p in logs if ":actor_name:ClientAppActor" in p.read_text()]
        assert len(actors) == 2, result.output[-3000:]
    rounds = pd.read_parquet(result.run_dir / "rounds.parquet")
    assert list(rounds["train_clients"]) == [3, 3]
    assert list(rounds["eval_clients"].iloc[-1:]) == [3]
