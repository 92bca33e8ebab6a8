"""FLASH: sparse dynamic training cases (flash.md section 8 D-F) and the three modes end to end
through the real strategy and client code (in-process grid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedticket.config import RunConfig
from fedticket.simulations.server_app import run_federation
from fedticket.sparse.prune_regrow import prune_and_regrow, prune_rate_at
from fedticket.strategies.flash import Flash
from tests.loopback import LoopbackGrid


def test_d_prune_keeps_the_largest_active_and_regrows_the_same_number() -> None:
    rng = np.random.default_rng(0)
    weights = {"w": rng.permutation(100).astype(np.float64) + 1}
    mask = np.zeros(100, bool)
    mask[rng.choice(100, 20, replace=False)] = True
    out = prune_and_regrow(weights, {"w": mask}, 0.25, rng)["w"]
    kept = np.flatnonzero(mask)
    survivors = kept[np.argsort(weights["w"][kept])[5:]]  # ceil(0.25 * 20) = 5 smallest dropped
    assert out[survivors].all() and int(out.sum()) == 20


def test_e_prune_rate_schedule() -> None:
    assert prune_rate_at(16 // 2 + 1, 16) == pytest.approx(0.109375)  # JMWST's single update, nb=16
    assert [round(prune_rate_at(e, 10), 3) for e in (1, 5, 9)] == [0.225, 0.125, 0.025]


def test_f_regrowth_follows_mean_magnitude_and_keeps_the_total() -> None:
    rng = np.random.default_rng(1)
    weights = {"big": np.full(1000, 5.0), "small": np.full(1000, 1.0)}
    masks = {"big": rng.random(1000) < 0.1, "small": rng.random(1000) < 0.1}
    before = {n: int(m.sum()) for n, m in masks.items()}
    after = {n: int(m.sum()) for n, m in prune_and_regrow(weights, masks, 0.5, rng).items()}
    assert sum(after.values()) == sum(before.values())
    assert after["big"] > before["big"] and after["small"] < before["small"]


def _run(tmp_path, mode: str, node_configs=None, **overrides) -> Flash:
    run_config = {
        "algorithm": "flash",
        "flash-mode": mode,
        "num-rounds": 3,
        "density": 0.2,
        "partitioner": "iid",
        "init-epochs": 2,
        "init-fraction": 0.5,
        "lr": 0.05,
        "min-train-clients": 4,
        "min-evaluate-clients": 4,
        "output-root": str(tmp_path),
    } | overrides
    grid = LoopbackGrid(4, run_config, node_configs=node_configs)
    strategy = run_federation(grid, RunConfig.from_run_config(run_config))
    assert isinstance(strategy, Flash)
    return strategy


@pytest.mark.usefixtures("flower_task_identity")
def test_spdst_stage1_sends_counts_only_and_the_mask_stays_fixed(tmp_path) -> None:
    strategy = _run(tmp_path, "spdst")
    comm = strategy.ledger.to_frame()
    stage1_up = comm[(comm["round"] == 0) & (comm["kind"] == "train") & (comm["direction"] == "up")]
    assert len(stage1_up) == 2 and (stage1_up["payload_bytes"] == 0).all()  # counts ride in metrics
    total = sum(strategy.sizes.values())
    kept = sum(int(m.sum()) for m in strategy.consensus.values())
    assert abs(kept - 0.2 * total) <= len(strategy.sizes)  # exact per-layer counts, rounded
    rounds = pd.DataFrame(strategy.round_rows)
    assert (rounds["client_mask_jaccard"] == 1.0).all()
    up = comm[(comm["round"] > 0) & (comm["kind"] == "train") & (comm["direction"] == "up")]
    assert (up["position_bytes"] == 0).all()  # the fixed mask never travels back


@pytest.mark.usefixtures("flower_task_identity")
def test_jmwst_clients_evolve_masks_and_the_consensus_keeps_the_density(tmp_path) -> None:
    strategy = _run(tmp_path, "jmwst")
    rounds = pd.DataFrame(strategy.round_rows)
    assert (rounds["consensus_density"] <= 0.2 + 1e-9).all() and (
        rounds["consensus_density"] > 0.19
    ).all()
    assert (rounds["client_mask_jaccard"] < 1.0).all()  # clients' masks diverge before consensus
    comm = strategy.ledger.to_frame()
    up = comm[(comm["round"] > 0) & (comm["kind"] == "train") & (comm["direction"] == "up")]
    assert (up["position_bytes"] > 0).all()  # evolved masks travel with the weights
    final = strategy._global
    for name, mask in strategy.consensus.items():
        assert np.all(final[name][~mask] == 0)


@pytest.mark.usefixtures("flower_task_identity")
def test_hetero_payloads_follow_each_devices_budget_and_levels_nest(tmp_path) -> None:
    devices = {
        0: {"device-class": "pi4"},
        1: {"device-class": "pi4"},
        2: {"device-class": "jetson"},
        3: {"device-class": "jetson"},
    }
    strategy = _run(tmp_path, "hetero", node_configs=devices)
    for name in strategy.prunable:
        assert not np.any(strategy.levels[0.5][name] & ~strategy.levels[1.0][name])
    clients = pd.DataFrame(strategy.client_rows)
    last = clients[(clients["round"] == 3) & (clients["phase"] == "train")].set_index(
        "partition_id"
    )
    assert last.loc[0, "density"] == pytest.approx(last.loc[2, "density"] / 2, rel=0.02)
    comm = strategy.ledger.to_frame()
    down = comm[(comm["round"] == 3) & (comm["kind"] == "train") & (comm["direction"] == "down")]
    sizes = down.set_index("partition_id")["payload_bytes"]
    assert sizes[0] == sizes[1] < sizes[2] == sizes[3]
