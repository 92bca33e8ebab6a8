"""LotteryFL: the spec's closed-form cases (../shared/algorithms/lotteryfl.md section 6)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import RecordDict

from fedticket.clients.lotteryfl import LotteryFLClient, initial_weights
from fedticket.clients.state import ClientState
from fedticket.config import RunConfig
from fedticket.learn.data import client_data
from fedticket.learn.models import build_model, state_arrays
from fedticket.simulations.server_app import run_federation
from fedticket.sparse.masks import (
    apply_masks,
    ones_masks,
    prunable_names,
    prune_by_magnitude,
    prune_count,
)
from fedticket.strategies.lotteryfl import LotteryFL
from tests.loopback import LoopbackGrid

CNN_TOTALS = [21750, 17400, 13920, 11136, 8908, 7125, 5699, 4559, 3646, 2916, 2332, 1865]
CONV1 = [250, 200, 160, 128, 102, 81, 65, 52, 41, 33, 26, 21]


def _cnn():
    return build_model("mnist-cnn", (1, 28, 28), 10, seed=0)


def test_t1_per_layer_prune_counts_of_the_mnist_cnn() -> None:
    model = _cnn()
    weights = state_arrays(model)
    rng = np.random.default_rng(0)
    weights = {
        n: rng.permutation(w.size).reshape(w.shape).astype(np.float32) + 1
        for n, w in weights.items()
    }
    masks = ones_masks({n: weights[n].shape for n in prunable_names(model)})
    for k in range(12):
        assert sum(int(m.sum()) for m in masks.values()) == CNN_TOTALS[k]
        assert int(masks["conv1.weight"].sum()) == CONV1[k]
        if k == 1:
            assert [int(masks[n].sum()) for n in masks] == [200, 4000, 12800, 400]
        masks = prune_by_magnitude(weights, masks, 0.2)
    five = prune_by_magnitude({"w": np.arange(1.0, 6.0)}, ones_masks({"w": (5,)}), 0.2)
    assert int(five["w"].sum()) == 4  # ceil(0.2 * 4) = 1 removed
    assert prune_count(16, 0.2) == 3  # 0.2 * 15 is exactly 3, not 3.0000000000000004 -> 4


def test_pruning_removes_the_smallest_magnitudes_and_breaks_ties_by_index() -> None:
    weights = {"w": np.array([0.5, -0.1, 0.1, 3.0, 0.0, 2.0], np.float32)}
    masks = {"w": np.array([True, True, True, True, False, True])}
    out = prune_by_magnitude(weights, masks, 0.5)  # 5 alive: ceil(0.5 * 4) = 2 removed
    np.testing.assert_array_equal(out["w"], [True, False, False, True, False, True])
    assert masks["w"].sum() == 5  # input untouched


def test_t2_stop_rule_counts_prunes_by_the_nominal_rate() -> None:
    for target, expected, final in ((0.1, 11, 0.0858993), (0.5, 4, 0.4096)):
        rate, prunes = 1.0, 0
        while rate > target:
            rate *= 0.8
            prunes += 1
        assert prunes == expected and abs(rate - final) < 1e-6


def test_t3_rewind_restores_theta0_on_kept_entries_and_zero_elsewhere() -> None:
    theta0 = initial_weights("mnist-cnn", "mnist-offline", 42)
    snapshot = {k: v.copy() for k, v in theta0.items()}
    masks = prune_by_magnitude(
        theta0, ones_masks({n: theta0[n].shape for n in prunable_names(_cnn())}), 0.2
    )
    rewound = apply_masks(theta0, masks)
    for name, values in rewound.items():
        if name in masks:
            assert np.array_equal(values[masks[name]], theta0[name][masks[name]])
            assert np.all(values[~masks[name]] == 0)
        else:
            assert np.array_equal(values, theta0[name]) and values is not theta0[name]
    rewound["fc1.bias"] += 1.0  # training the rewound copy must not touch theta_0 (bug B1)
    assert all(np.array_equal(theta0[k], snapshot[k]) for k in theta0)


def _client(tmp_path, **overrides) -> tuple[LotteryFLClient, dict, dict]:
    config = RunConfig.from_run_config({"partitioner": "iid", "local-epochs": 1} | overrides)
    model = _cnn()
    data = client_data(config, 0, 10)
    state = ClientState(RecordDict(), 0)
    theta0 = initial_weights(config.model, config.dataset, config.seed)
    masks = ones_masks({n: theta0[n].shape for n in prunable_names(model)})
    return LotteryFLClient(config, data, state, model), dict(theta0), masks


def test_gate_is_strict_and_a_passed_gate_prunes_rewinds_and_trains_under_the_mask(
    tmp_path,
) -> None:
    client, theta0, masks = _client(tmp_path)
    _, _, metrics = client.fit(1, theta0, masks)
    gate = metrics["gate-accuracy"]  # the accuracy of theta_0 on the validation split
    equal, _, _ = _client(tmp_path, **{"acc-threshold": gate})
    _, same_masks, m_equal = equal.fit(1, theta0, masks)
    assert m_equal["pruned"] == 0.0 and same_masks is masks  # acc == threshold: no prune
    below, _, _ = _client(tmp_path, **{"acc-threshold": gate - 0.01})
    arrays, new_masks, m_below = below.fit(1, theta0, masks)
    assert m_below["pruned"] == 1.0 and m_below["kept-rate"] == pytest.approx(0.8)
    assert sum(int(m.sum()) for m in new_masks.values()) == CNN_TOTALS[1]
    for name, keep in new_masks.items():
        assert np.all(arrays[name][~keep] == 0)  # trained under the new mask
    assert below.state.counters()["prunes"] == 1


def test_target_reached_stops_pruning(tmp_path) -> None:
    client, theta0, masks = _client(tmp_path, **{"acc-threshold": -1.0, "target-density": 0.5})
    for round_ in range(1, 7):
        _, masks, metrics = client.fit(round_, theta0, masks)
    assert metrics["prunes"] == 4 and metrics["kept-rate"] == pytest.approx(0.4096)


@pytest.mark.usefixtures("flower_task_identity")
def test_t9_three_clients_densities_follow_0_8_power_k(tmp_path) -> None:
    run_config = {
        "algorithm": "lotteryfl",
        "num-rounds": 3,
        "partitioner": "iid",
        "acc-threshold": -1.0,
        "min-train-clients": 3,
        "min-evaluate-clients": 3,
        "output-root": str(tmp_path),
    }
    rounds_seen = []

    class Recording(LotteryFL):
        def aggregate(self, server_round, updates, global_arrays):
            new = super().aggregate(server_round, updates, global_arrays)
            rounds_seen.append((global_arrays, new, [u.masks for u in updates]))
            return new

    strategy = run_federation(
        LoopbackGrid(3, run_config), RunConfig.from_run_config(run_config), Recording
    )
    clients = strategy.client_rows
    for round_ in (1, 2, 3):
        densities = [
            r["density"] for r in clients if r["round"] == round_ and r["phase"] == "train"
        ]
        assert densities == [CNN_TOTALS[round_] / 21750] * 3
    # an entry no replying client keeps keeps its previous global value (spec A2)
    assert len(rounds_seen) == 3
    for previous, new, masks in rounds_seen:
        for name in strategy.prunable:
            kept_by_any = np.logical_or.reduce([m[name] for m in masks])
            assert (~kept_by_any).any()
            assert np.array_equal(new[name][~kept_by_any], previous[name][~kept_by_any])
            assert not np.array_equal(new[name][kept_by_any], previous[name][kept_by_any])
    comm = strategy.ledger.to_frame()
    up = comm[(comm["kind"] == "train") & (comm["direction"] == "up")]
    assert (up["position_bytes"] > 0).all()  # each reply carries the new mask (pruned every round)
    later_down = comm[
        (comm["kind"] == "train") & (comm["direction"] == "down") & (comm["round"] > 1)
    ]
    assert (later_down["position_bytes"] == 0).all()  # the server never resends what clients hold
