"""CELL: the spec's closed-form cases (docs/algorithms/cell.md section 4) and a federation on the
loopback grid through the real strategy and client code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import RecordDict

from fedticket.algorithms.cell import kept_count, next_pruned_share, removal_counts
from fedticket.clients.cell import CellClient
from fedticket.clients.state import ClientState
from fedticket.config import RunConfig
from fedticket.learn.data import client_data
from fedticket.learn.models import build_model, state_arrays
from fedticket.simulations.server_app import run_federation
from fedticket.sparse.masks import ones_masks, prunable_names
from fedticket.strategies.cell import Cell
from tests.loopback import LoopbackGrid


def test_a_the_schedule_is_additive_and_stops_at_the_target() -> None:
    shares, pruned = [], 0.0
    for _ in range(6):
        pruned = next_pruned_share(pruned, 0.2, 0.8)
        shares.append(pruned)
    assert shares == [0.2, 0.4, 0.6, 0.8, 0.8, 0.8]  # exact, not 0.6000000000000001
    assert [kept_count(250, s) for s in (0.0, 0.2, 0.4, 0.6, 0.8)] == [250, 200, 150, 100, 50]
    assert kept_count(3, 0.8) == 1 and kept_count(7, 0.5) == 4  # 7 - floor(3.5)
    masks = {"w": np.ones(250, bool), "v": np.r_[np.ones(150, bool), np.zeros(100, bool)]}
    assert removal_counts(masks, 0.4) == {"w": 100, "v": 0}


def _client(**overrides) -> CellClient:
    config = RunConfig.from_run_config(
        {"algorithm": "cell", "partitioner": "iid", "local-epochs": 1} | overrides
    )
    model = build_model("mnist-cnn", (1, 28, 28), 10, seed=config.seed)
    return CellClient(config, client_data(config, 0, 10), ClientState(RecordDict(), 0), model)


def test_b_a_failing_user_ramps_its_threshold_down_trains_dense_then_prunes(monkeypatch) -> None:
    client = _client()
    arrays = state_arrays(client.model)
    monkeypatch.setattr(CellClient, "gate_accuracy", lambda self: 0.2)
    seen = []
    for server_round in (1, 2, 3, 4):
        _, masks, metrics = client.fit(server_round, arrays, None)
        seen.append((metrics["straggler"], metrics["threshold"], metrics["kept-rate"], masks))
    # 0.2 < 0.5 -> 0.25; 0.2 < 0.25 -> 0.125; 0.2 >= 0.125: a lottery step, threshold reset
    assert [s[:2] for s in seen[:3]] == [(1.0, 0.25), (1.0, 0.125), (0.0, 0.5)]
    assert seen[0][3] is None and seen[1][3] is None  # a straggler uploads dense
    ticket = seen[2][3]
    assert ticket is not None
    for name, mask in ticket.items():
        assert int(mask.sum()) == kept_count(mask.size, 0.2), name
    # reset to 0.5, the user fails again: a straggler once more, its ticket kept as it was
    assert seen[3][:2] == (1.0, 0.25) and seen[3][2] == seen[2][2] and seen[3][3] is None


def test_a_lottery_step_rewinds_survivors_to_theta0_and_keeps_the_ticket() -> None:
    client = _client(**{"cell-threshold": -1.0, "local-epochs": 1, "lr": 1e-9})
    theta0 = state_arrays(client.model)
    received = {n: t + 1.0 for n, t in theta0.items()}  # a broadcast model unlike theta_0
    arrays, masks, _ = client.fit(1, received, None)
    assert masks is not None
    for name in prunable_names(client.model):
        kept = masks[name]
        # trained from theta_0 with a vanishing step: the survivors are theta_0, the rest 0
        np.testing.assert_allclose(arrays[name][kept], theta0[name][kept], atol=1e-5)
        assert not arrays[name][~kept].any()
    assert client.state.arrays("ticket") is not None  # the ticket stays in the client's state


def test_c_fedavg_aggregation_counts_pruned_entries_as_zero_keeper_does_not(tmp_path) -> None:
    from fedticket.strategies.base import ClientUpdate
    from fedticket.strategies.nodes import NodeInfo

    def strategy(aggregation: str) -> Cell:
        config = RunConfig.from_run_config(
            {"algorithm": "cell", "cell-aggregation": aggregation, "output-root": str(tmp_path)}
        )
        from fedticket.store.results import RunDirectory

        template = {"w": np.zeros(2, np.float32)}
        return Cell(config, template, RunDirectory(tmp_path, "cell", aggregation), ["w"])

    updates = [
        ClientUpdate(NodeInfo(1, 0, 1, 1), {"w": np.array([2.0, 0.0], np.float32)},
                     {"w": np.array([True, False])}, {"num-examples": 1}),
        ClientUpdate(NodeInfo(2, 1, 3, 1), {"w": np.array([6.0, 6.0], np.float32)},
                     None, {"num-examples": 3}),
    ]  # fmt: skip
    previous = {"w": np.zeros(2, np.float32)}
    np.testing.assert_allclose(strategy("fedavg").aggregate(1, updates, previous)["w"], [5, 4.5])
    np.testing.assert_allclose(strategy("keeper").aggregate(1, updates, previous)["w"], [5, 6])


@pytest.fixture(scope="module")
def cell_run(tmp_path_factory) -> tuple[Cell, pd.DataFrame]:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1  # FLOWER-NOTES 1
    root = tmp_path_factory.mktemp("cell")
    run_config = {
        "algorithm": "cell",
        "num-rounds": 3,
        "min-train-clients": 3,
        "min-evaluate-clients": 3,
        "min-available-clients": 3,
        "cell-threshold": -1.0,  # every user passes: one lottery step per round
        "link-down-mbps": 10.0,
        "link-up-mbps": 1.0,
        "output-root": str(root),
        "client-state": "memory",
    }
    strategy = run_federation(LoopbackGrid(3, run_config), RunConfig.from_run_config(run_config))
    return strategy, strategy.ledger.to_frame()


def test_d_the_broadcast_is_one_row_per_round_and_kind(cell_run) -> None:
    strategy, comm = cell_run
    down = comm[comm["direction"] == "down"]
    broadcast = down[down["channel"] == "broadcast"]
    assert len(broadcast[broadcast["kind"] == "train"]) == 3  # one per round, not one per user
    assert (broadcast["node_id"] == 0).all() and (broadcast["partition_id"] == -1).all()
    unicast = down[(down["channel"] == "unicast") & (down["kind"] == "train")]
    assert len(unicast) == 9 and (unicast["payload_bytes"] == 0).all()
    dense = sum(t.nbytes for t in strategy.template.values())
    assert (broadcast["dense_bytes"] == dense).all()
    # each round's broadcast is the cheaper lossless form of one model: dense in round 1 (theta_0
    # has no zeros), under the non-zero pattern once every upload is sparse
    rounds = pd.DataFrame(strategy.round_rows).set_index("round")
    train = broadcast[broadcast["kind"] == "train"].set_index("round")["payload_bytes"]
    cheaper = rounds[["broadcast_dense_bytes", "broadcast_masked_bytes"]].min(axis=1)
    assert list(train) == list(cheaper)
    assert list(rounds["broadcast_masked"]) == [0.0, 1.0, 1.0]
    assert train[1] > 0.99 * dense and train[3] < 0.7 * dense
    # priced on the slowest downlink (10 Mbit/s here): bytes * 8 / 1e7 seconds
    seconds = broadcast["message_bytes"] * 8 / 10e6
    np.testing.assert_allclose(broadcast["transfer_seconds"], seconds)
    up = comm[(comm["direction"] == "up") & (comm["kind"] == "train")]
    assert (up["channel"] == "unicast").all() and len(up) == 9


def test_personal_tickets_shrink_per_round_and_the_rounds_table_counts_states(cell_run) -> None:
    strategy, _ = cell_run
    rounds = pd.DataFrame(strategy.round_rows)
    np.testing.assert_allclose(rounds["mean_density"], [0.8, 0.6, 0.4], atol=0.01)
    assert list(rounds["lottery_steps"]) == [3, 3, 3] and list(rounds["stragglers"]) == [0, 0, 0]
    assert (rounds["broadcast_masked_bytes"] > 0).all()
    assert (rounds["broadcast_dense_bytes"] > 0).all()
    assert set(strategy.masks) == {0, 1, 2}
    for masks in strategy.masks.values():  # each user's own ticket, at its own density
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.size for m in masks.values())
        assert abs(kept / total - 0.4) < 0.01
    shapes = {n: strategy.template[n].shape for n in strategy.prunable}
    assert set(strategy.masks[0]) == set(ones_masks(shapes))
    assert not all(
        np.array_equal(strategy.masks[0][n], strategy.masks[1][n]) for n in strategy.prunable
    )


def test_e_a_reply_modelled_past_the_deadline_is_left_out_and_counted(tmp_path) -> None:
    from fedticket.algorithms.cell import simulated_slowdowns
    from fedticket.store.results import RunDirectory
    from fedticket.strategies.base import ClientUpdate
    from fedticket.strategies.nodes import NodeInfo

    mix = simulated_slowdowns(8, seed=3, slow_share=0.25, slowdown=4.0)
    assert sorted(mix.values()) == [1.0] * 6 + [4.0] * 2
    assert mix == simulated_slowdowns(8, seed=3, slow_share=0.25, slowdown=4.0)
    config = RunConfig.from_run_config(
        {
            "algorithm": "cell",
            "local-epochs": 2,
            "cell-deadline": 2.5,
            "cell-samples-per-second": 100.0,
            "cell-slow-share": 0.0,
        }
    )
    template = {"w": np.zeros(2, np.float32)}
    cell = Cell(config, template, RunDirectory(tmp_path, "cell", "deadline"), ["w"])

    def update(pid: int, slowdown: float, value: float) -> ClientUpdate:
        node = NodeInfo(pid + 1, pid, 100, 10, num_partitions=3, compute_slowdown=slowdown)
        arrays = {"w": np.full(2, value, np.float32)}
        return ClientUpdate(node, arrays, None, {"num-examples": 100})

    # 100 samples x 2 epochs / 100 per s x slowdown: 2 s, 4 s (late), 1 s
    updates = [update(0, 1.0, 3.0), update(1, 2.0, 100.0), update(2, 0.5, 5.0)]
    merged = cell.aggregate(1, updates, {"w": np.zeros(2, np.float32)})
    np.testing.assert_allclose(merged["w"], [4.0, 4.0])  # the late reply's 100 left out
    extras = cell.round_extras(1)
    assert (extras["late"], extras["waited_for"]) == (1.0, 2.0)
    assert extras["model_round_seconds"] == 2.5 and extras["model_round_seconds_no_deadline"] == 4.0


def test_a_node_config_slowdown_travels_in_the_handshake_and_a_bad_one_is_refused(
    tmp_path, flower_task_identity
) -> None:
    run_config = {
        "algorithm": "cell",
        "num-rounds": 1,
        "min-train-clients": 2,
        "min-evaluate-clients": 2,
        "min-available-clients": 2,
        "output-root": str(tmp_path),
    }
    nodes = {0: {"compute-slowdown": 3.0}, 1: {"compute-slowdown": -1}}
    grid = LoopbackGrid(3, run_config, node_configs=nodes)
    strategy = run_federation(grid, RunConfig.from_run_config(run_config))
    by_pid = {n.partition_id: n for n in strategy.nodes.values()}
    assert by_pid[0].compute_slowdown == 3.0 and by_pid[2].compute_slowdown == 0.0
    assert 1 not in by_pid  # its handshake failed, named
    assert any("compute-slowdown=-1" in reason for reason in strategy.rejected.values())


def test_d_two_broadcast_domains_are_two_broadcasts_each_on_its_slowest_link(
    tmp_path, flower_task_identity
) -> None:
    run_config = {
        "algorithm": "cell",
        "num-rounds": 1,
        "min-train-clients": 4,
        "min-evaluate-clients": 4,
        "min-available-clients": 4,
        "local-epochs": 1,
        "output-root": str(tmp_path),
    }
    nodes = {
        0: {"broadcast-domain": "cell-a", "link-down-mbps": 10.0},
        1: {"broadcast-domain": "cell-a", "link-down-mbps": 40.0},
        2: {"broadcast-domain": "cell-b", "link-down-mbps": 80.0},
        3: {"broadcast-domain": "cell-b", "link-down-mbps": 20.0},
    }
    grid = LoopbackGrid(4, run_config, node_configs=nodes)
    strategy = run_federation(grid, RunConfig.from_run_config(run_config))
    comm = strategy.ledger.to_frame()
    rows = comm[(comm["channel"] == "broadcast") & (comm["kind"] == "train")]
    assert list(rows["domain"]) == ["cell-a", "cell-b"]
    slowest = (
        rows.set_index("domain")["message_bytes"] * 8 / pd.Series({"cell-a": 10e6, "cell-b": 20e6})
    )
    np.testing.assert_allclose(rows.set_index("domain")["transfer_seconds"], slowest)
    assert {n.broadcast_domain for n in strategy.nodes.values()} == {"cell-a", "cell-b"}
