"""FedLTN: closed-form cases of ../shared/algorithms/fedltn.md section 5 and the real client,
strategy and message path (in-process loopback grid; the Flower run is in test_end_to_end)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import RecordDict

import fedticket.clients.fedltn as fedltn_client
from fedticket.algorithms.fedltn import (
    jumpstart_steps,
    jumpstart_ticket,
    post_prune_counts,
    scheduled_alive,
    step_count,
    steps_to_target,
    target_count,
)
from fedticket.clients.fedltn import FedLTNClient
from fedticket.clients.lotteryfl import initial_weights
from fedticket.clients.state import ClientState
from fedticket.config import RunConfig
from fedticket.learn.data import client_data
from fedticket.learn.models import batchnorm_names, build_model
from fedticket.simulations.server_app import run_federation
from fedticket.sparse.aggregate import masked_mean, server_momentum
from fedticket.sparse.masks import ones_masks, prunable_names, prune_smallest
from fedticket.strategies.fedltn import FedLTN
from tests.loopback import LoopbackGrid

BN_MODEL = "mnist-cnn-bn"


def test_case1_schedule_of_one_100_weight_layer() -> None:
    assert steps_to_target(0.2, 0.1) == 11 and jumpstart_steps(0.2, 0.1) == 6
    assert [scheduled_alive(100, 0.2, 0.1, k) for k in range(7)] == [100, 80, 64, 52, 42, 34, 28]
    # the last step is clamped so the layer lands exactly on ceil(0.1 * size)
    assert target_count(100, 0.1) == 10
    assert step_count(11, 100, 0.2, 0.1) == 1 and step_count(10, 100, 0.2, 0.1) == 0
    assert scheduled_alive(100, 0.2, 0.1, 40) == 10
    assert scheduled_alive(16000, 0.2, 0.1, 40) == 1600


def test_case2_magnitude_prunes_floor_of_rate_times_alive() -> None:
    w = {"w": np.array([0.1, -0.5, 0.3, -0.05, 0.9])}
    masks = {"w": np.ones(5, bool)}
    counts = post_prune_counts(masks, 0.4, 0.0)
    assert counts == {"w": 2}
    assert prune_smallest(w, masks, counts)["w"].tolist() == [False, True, True, False, True]


def test_case5_and_6_keeper_mean_then_server_momentum_by_hand() -> None:
    a, b = {"w": np.array([1.0, 2.0, 0.0, 0.0])}, {"w": np.array([3.0, 0.0, 5.0, 0.0])}
    masks = [{"w": np.array([1, 1, 0, 0], bool)}, {"w": np.array([1, 0, 1, 0], bool)}]
    mean = masked_mean([a, b], masks, [1, 1], {"w": np.full(4, 9.0)})
    assert mean["w"].tolist() == [2.0, 2.0, 5.0, 9.0]

    theta0 = {"w": np.ones(4)}
    everyone = {"w": np.ones(4, bool)}
    theta1, v1 = server_momentum(theta0, {"w": np.full(4, 0.5)}, {}, everyone, 0.9, 1.0)
    assert np.allclose(v1["w"], 0.5) and np.allclose(theta1["w"], 0.5)  # = FedAvg in round 1
    kept = {"w": np.array([1, 1, 1, 0], bool)}
    theta2, v2 = server_momentum(theta1, {"w": np.array([0.3, 0.3, 0.3, 0.5])}, v1, kept, 0.9, 1.0)
    assert np.allclose(v2["w"], [0.65, 0.65, 0.65, 0.5])  # entry 4: nobody kept it, v frozen
    assert np.allclose(theta2["w"], [-0.15, -0.15, -0.15, 0.5])
    _, v_half = server_momentum(theta1, {"w": np.full(4, 0.3)}, v1, everyone, 0.9, 0.5)
    theta_half, _ = server_momentum(theta1, {"w": np.full(4, 0.3)}, v1, everyone, 0.9, 0.5)
    assert np.allclose(theta_half["w"], 0.5 - 0.5 * 0.65) and np.allclose(v_half["w"], 0.65)


def _client(tmp_path, **overrides) -> tuple[FedLTNClient, dict, dict]:
    config = RunConfig.from_run_config(
        {"algorithm": "fedltn", "model": BN_MODEL, "partitioner": "iid", "local-epochs": 1}
        | overrides
    )
    model = build_model(BN_MODEL, (1, 28, 28), 10, seed=config.seed)
    data = client_data(config, 0, 10)
    theta0 = dict(initial_weights(config.model, config.dataset, config.seed))
    masks = ones_masks({n: theta0[n].shape for n in prunable_names(model)})
    return FedLTNClient(config, data, ClientState(RecordDict(), 0), model), theta0, masks


def test_case3_post_pruning_keeps_trained_values_and_never_rewinds(tmp_path, monkeypatch) -> None:
    client, theta0, masks = _client(tmp_path, **{"acc-threshold": -1.0})
    seen = {}

    def recording(weights, masks, counts):
        seen.update({k: v.copy() for k, v in weights.items()})
        return prune_smallest(weights, masks, counts)

    monkeypatch.setattr(fedltn_client, "prune_smallest", recording)
    arrays, new_masks, metrics = client.fit(1, theta0, masks)
    assert metrics["pruned"] == 1.0 and metrics["prunes"] == 1
    for name, values in arrays.items():
        if name in new_masks:
            keep = new_masks[name]
            assert np.array_equal(values[keep], seen[name][keep])  # the trained values, bit for bit
            assert np.all(values[~keep] == 0)
            assert not np.array_equal(values[keep], theta0[name][keep])  # LotteryFL would be theta0
            assert keep.sum() == keep.size - int(0.2 * keep.size)
        else:
            assert np.array_equal(values, seen[name])  # biases and BN untouched by the prune


def test_case4_gate_is_strict_and_stops_at_the_target(tmp_path, monkeypatch) -> None:
    client, theta0, masks = _client(tmp_path, **{"acc-threshold": 0.5})
    monkeypatch.setattr(FedLTNClient, "gate_accuracy", lambda self: 0.5)
    _, same, metrics = client.fit(1, theta0, masks)
    assert metrics["pruned"] == 0.0 and all(np.array_equal(same[n], masks[n]) for n in masks)
    monkeypatch.setattr(FedLTNClient, "gate_accuracy", lambda self: 0.51)
    _, _, metrics = client.fit(2, theta0, masks)
    assert metrics["pruned"] == 1.0
    at_target = {
        n: prune_smallest(theta0, {n: m}, {n: m.size - target_count(m.size, 0.1)})[n]
        for n, m in masks.items()
    }
    _, unchanged, metrics = client.fit(3, theta0, at_target)
    assert metrics["pruned"] == 0.0 and metrics["kept-rate"] == pytest.approx(0.1)
    assert all(np.array_equal(unchanged[n], at_target[n]) for n in masks)


def test_jump_start_local_runs_s_js_extra_cycles_once(tmp_path) -> None:
    client, theta0, masks = _client(tmp_path, **{"acc-threshold": -1.0, "jump-start": "local"})
    _, masks1, m1 = client.fit(1, theta0, masks)
    assert m1["prunes"] == 7  # S_js = 6 cycles before the round's own
    assert {n: int(m.sum()) for n, m in masks1.items()} == {
        n: scheduled_alive(m.size, 0.2, 0.1, 7) for n, m in masks.items()
    }
    _, _, m2 = client.fit(2, theta0, masks1)
    assert m2["prunes"] == 8


def test_jump_start_ticket_has_the_scheduled_counts_among_cohort_entries() -> None:
    rng = np.random.default_rng(0)
    theta = {"w": rng.normal(size=1000)}
    cohort = [{"w": rng.random(1000) < 0.3}, {"w": rng.random(1000) < 0.3}]
    ticket = jumpstart_ticket(theta, cohort, 0.2, 0.1)["w"]
    union = cohort[0]["w"] | cohort[1]["w"]
    assert ticket.sum() == scheduled_alive(1000, 0.2, 0.1, 6) == 0.8**6 * 1000 // 1 + 1
    assert not (ticket & ~union).any()
    kept, dropped = np.abs(theta["w"][ticket]), np.abs(theta["w"][union & ~ticket])
    assert kept.min() >= dropped.max()


def _run(tmp_path, rounds: int, **overrides) -> tuple[FedLTN, LoopbackGrid]:
    run_config = {
        "algorithm": "fedltn",
        "model": BN_MODEL,
        "num-rounds": rounds,
        "partitioner": "iid",
        "acc-threshold": -1.0,
        "min-train-clients": 1,
        "min-evaluate-clients": 3,
        "min-available-clients": 3,
        "evaluate-every": 2,
        "output-root": str(tmp_path),
    } | overrides
    grid = LoopbackGrid(3, run_config)
    strategy = run_federation(grid, RunConfig.from_run_config(run_config))
    return strategy, grid


@pytest.mark.usefixtures("flower_task_identity")
def test_case7_batchnorm_never_leaves_a_client(tmp_path) -> None:
    strategy, grid = _run(tmp_path, 2)
    bn = set(batchnorm_names(build_model(BN_MODEL, (1, 28, 28), 10, 0)))
    assert bn and not bn & set(strategy.template)
    sent = [m for m in grid.delivered if "payload" in m.content]
    assert len(sent) == 3 * 2 + 3  # train down in 2 rounds + evaluate down once
    for message in sent:
        assert not bn & set(message.content["payload"]["tensors"])
    comm = strategy.ledger.to_frame()
    assert len(comm[(comm["kind"] == "train") & (comm["direction"] == "up")]) == 6
    # every upload is the clients' LTN: no BN bytes (the server decodes against a BN-free template)
    for context in grid.contexts.values():
        local = ClientState(context.state, context.node_config["partition-id"]).arrays("local")
        assert set(local) == bn
        assert not np.allclose(local["bn1.running_mean"], 0)  # trained statistics kept locally
        assert local["bn1.num_batches_tracked"] > 0


@pytest.mark.usefixtures("flower_task_identity")
def test_case8_jump_start_cohort_then_joiners_from_the_ticket(tmp_path) -> None:
    strategy, _ = _run(
        tmp_path,
        8,
        **{"jump-start": "cohort", "jumpstart-fraction": 0.34, "evaluate-every": 8},
    )
    assert len(strategy.cohort) == 1
    cohort = strategy.cohort[0]
    train = [r for r in strategy.client_rows if r["phase"] == "train"]
    first_six = {r["partition_id"] for r in train if r["round"] <= 6}
    assert first_six == {cohort}  # phase 1: only the cohort trains, one prune per round
    assert [r["density"] for r in train if r["partition_id"] == cohort][:6] == pytest.approx(
        [
            sum(scheduled_alive(strategy.template[n].size, 0.2, 0.1, k) for n in strategy.prunable)
            / sum(strategy.template[n].size for n in strategy.prunable)
            for k in range(1, 7)
        ]
    )
    joiners = [r for r in train if r["partition_id"] != cohort]
    assert {r["round"] for r in joiners} == {7, 8}
    sizes = {n: strategy.template[n].size for n in strategy.prunable}
    seven = [r for r in joiners if r["round"] == 7]
    expected = sum(scheduled_alive(s, 0.2, 0.1, 7) for s in sizes.values()) / sum(sizes.values())
    assert all(r["density"] == pytest.approx(expected) for r in seven)  # S_js + 1 steps done
    assert [r["jump_start_phase"] for r in strategy.round_rows] == [1.0] * 6 + [0.0] * 2
    assert strategy.round_rows[6]["jump_start_phase"] == 0.0


@pytest.mark.usefixtures("flower_task_identity")
@pytest.mark.parametrize("algorithm", ["fedavg", "lotteryfl"])
def test_baselines_send_and_average_batchnorm_on_the_bn_model(tmp_path, algorithm) -> None:
    """The paper's comparison runs on the same BN network; there BN travels (0-d
    ``num_batches_tracked`` included) and is averaged like any unmasked tensor."""
    run_config = {
        "algorithm": algorithm,
        "model": BN_MODEL,
        "num-rounds": 1,
        "partitioner": "iid",
        "output-root": str(tmp_path),
    }
    grid = LoopbackGrid(2, run_config)
    strategy = run_federation(grid, RunConfig.from_run_config(run_config))
    assert all(r["status"] == "ok" for r in strategy.client_rows)
    assert "bn1.running_mean" in strategy.template
    assert strategy.template["bn1.num_batches_tracked"].shape == ()
