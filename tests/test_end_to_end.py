"""The real path: ``flwr run`` of this project on Flower's simulation engine."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedticket.config import RunConfig
from fedticket.learn.models import build_model, state_arrays
from fedticket.simulations.launcher import launch

pytestmark = pytest.mark.slow


def varint_len(x: int) -> int:
    return max(1, (x.bit_length() + 6) // 7)


def dense_buffer_bytes(t: np.ndarray) -> int:
    """Hand-computed codec size of a dense float32 tensor: magic, version, scheme, dtype,
    ndim, dims, count, position length 0, parameter 0, crc32, then the values."""
    header = 5 + sum(varint_len(d) for d in t.shape) + varint_len(t.size) + 1 + 1 + 4
    return header + t.nbytes


def test_three_clients_two_rounds_write_complete_tables(tmp_path) -> None:
    run_config = {
        "algorithm": "fedavg",
        "num-rounds": 2,
        "lr": 0.05,
        "output-root": str(tmp_path / "runs"),
        "seed": 5,
    }
    result = launch(run_config, num_supernodes=3, workdir=tmp_path / "launch", timeout=600)
    assert result.returncode == 0, result.output[-3000:]
    expected = RunConfig.from_run_config(run_config)
    assert result.run_dir == tmp_path / "runs" / "fedavg" / expected.config_hash()
    written = json.loads((result.run_dir / "config.json").read_text())
    environment = written.pop("environment")
    assert written == expected.to_dict()
    assert environment["cores"] >= 1 and environment["cpu"]
    assert environment["packages"]["flwr"].startswith("1.") and "torch" in environment["packages"]
    assert "round 2/2  served " in result.output and "x less" in result.output

    rounds = pd.read_parquet(result.run_dir / "rounds.parquet")
    assert rounds["round"].tolist() == [1, 2]
    assert (rounds["train_clients"] == 3).all() and (rounds["eval_clients"] == 3).all()
    assert (rounds[["train_failures", "eval_failures"]] == 0).all().all()
    for protocol in ("served", "local", "global", "reference"):
        assert rounds[f"{protocol}_accuracy"].between(0, 1).all(), protocol
    assert rounds["global_accuracy"].iloc[1] > 0.3  # 2 rounds of FedAvg on label-skewed digits
    # FedAvg + one round of local fine-tuning is a model of its own, scored a round later
    assert (rounds["local_age"] == 0).all() and (rounds["local_clients"] == 3).all()

    clients = pd.read_parquet(result.run_dir / "clients.parquet")
    assert len(clients) == 2 * (3 + 3)
    assert sorted(clients["partition_id"].unique()) == [0, 1, 2]
    assert (clients["status"] == "ok").all()
    train_rows = clients[clients["phase"] == "train"]
    assert (train_rows["density"] == 1.0).all() and (train_rows["train_loss"] > 0).all()

    comm = pd.read_parquet(result.run_dir / "comm.parquet")
    assert len(comm) == 3 * 2 + 2 * (3 * 4)  # handshake + per round 4 messages per client
    template = state_arrays(build_model("mnist-cnn", (1, 28, 28), 10, seed=5))
    model_payload = sum(dense_buffer_bytes(t) for t in template.values())
    dense = sum(t.nbytes for t in template.values())
    assert dense == 21_840 * 4
    train = comm[comm["kind"] == "train"]
    assert (train["payload_bytes"] == model_payload).all()  # hand-computed size of each payload
    assert (train["dense_bytes"] == dense).all()
    assert (train["message_bytes"] > train["payload_bytes"]).all()
    assert (train["position_bytes"] == 0).all()  # dense: no positions
    # Flower's object headers: about 1 KB per message plus about 300 B per raw array (8 here)
    assert (train["message_bytes"] < train["payload_bytes"] + 1000 + 8 * 350).all()
    evaluate_up = comm[(comm["kind"] == "evaluate") & (comm["direction"] == "up")]
    assert (evaluate_up["payload_bytes"] == 0).all() and (evaluate_up["message_bytes"] > 0).all()
    per_round = comm[comm["round"] > 0].groupby(["round", "direction"])["message_bytes"].sum()
    assert per_round[(1, "down")] == rounds.loc[0, "message_bytes_down"]
    assert per_round[(2, "up")] == rounds.loc[1, "message_bytes_up"]


def test_bad_run_config_value_stops_before_writing_anything(tmp_path) -> None:
    # Flower 1.39's flwr run exits 0 however the ServerApp ended: the launcher's exit says it
    run_config = {"lr": float("nan"), "output-root": str(tmp_path / "runs")}
    result = launch(run_config, num_supernodes=2, workdir=tmp_path / "launch", timeout=300)
    assert "run-config key 'lr': must be a finite number" in result.output
    assert result.returncode != 0 and "'lr': must be a finite number" in result.failure
    assert "fedticket: results in" not in result.output
    assert not (tmp_path / "runs").exists()


CNN_TOTALS = [21750, 17400, 13920, 11136]


def test_lotteryfl_densities_follow_0_8_power_k_and_payloads_follow_density(tmp_path) -> None:
    run_config = {
        "algorithm": "lotteryfl",
        "num-rounds": 3,
        "acc-threshold": -1.0,
        "min-train-clients": 3,
        "min-evaluate-clients": 3,
        "output-root": str(tmp_path / "runs"),
    }
    result = launch(run_config, num_supernodes=3, workdir=tmp_path / "launch", timeout=600)
    assert result.returncode == 0 and result.run_dir is not None, result.output[-3000:]
    clients = pd.read_parquet(result.run_dir / "clients.parquet")
    train = clients[clients["phase"] == "train"]
    for round_ in (1, 2, 3):
        densities = train[train["round"] == round_]["density"]
        assert np.allclose(densities, CNN_TOTALS[round_] / 21750), densities
    comm = pd.read_parquet(result.run_dir / "comm.parquet")
    up = (
        comm[(comm["kind"] == "train") & (comm["direction"] == "up")]
        .groupby("round")["payload_bytes"]
        .mean()
    )
    assert up[1] > up[2] > up[3]  # each client's reply shrinks with its density
    values_at = {r: 4 * (CNN_TOTALS[r] + 90) for r in (1, 2, 3)}  # kept weights + 90 biases
    for r in (1, 2, 3):
        assert values_at[r] < up[r] < values_at[r] * 1.25  # + positions and 8 small headers
    rounds = pd.read_parquet(result.run_dir / "rounds.parquet")
    assert np.allclose(rounds["mean_density"], [CNN_TOTALS[r] / 21750 for r in (1, 2, 3)])


def test_flash_hetero_four_clients_payloads_follow_their_budgets(tmp_path) -> None:
    run_config = {
        "algorithm": "flash",
        "flash-mode": "hetero",
        "num-rounds": 2,
        "density": 0.2,
        "init-epochs": 2,
        "init-fraction": 0.5,
        "min-train-clients": 4,
        "min-evaluate-clients": 4,
        "output-root": str(tmp_path / "runs"),
    }
    result = launch(run_config, num_supernodes=4, workdir=tmp_path / "launch", timeout=600)
    assert result.returncode == 0 and result.run_dir is not None, result.output[-3000:]
    assert "FLASH stage 1 (2 clients)" in result.output
    comm = pd.read_parquet(result.run_dir / "comm.parquet")
    down = comm[(comm["round"] == 2) & (comm["kind"] == "train") & (comm["direction"] == "down")]
    sizes = down.set_index("partition_id")["payload_bytes"]
    # simulated nodes take the paper's mix by partition id: 0-2 at 0.5 d, 3 at 0.75 d
    assert sizes[0] == sizes[1] == sizes[2] < sizes[3]
    clients = pd.read_parquet(result.run_dir / "clients.parquet")
    train = clients[(clients["round"] == 2) & (clients["phase"] == "train")].set_index(
        "partition_id"
    )
    assert train.loc[3, "density"] == pytest.approx(1.5 * train.loc[0, "density"], rel=0.05)


def test_fedltn_three_clients_keep_batchnorm_local_and_jump_start(tmp_path) -> None:
    run_config = {
        "algorithm": "fedltn",
        "model": "mnist-cnn-bn",
        "jump-start": "cohort",
        "jumpstart-fraction": 0.34,
        "num-rounds": 3,
        "acc-threshold": -1.0,
        "min-train-clients": 1,
        "min-evaluate-clients": 3,
        "min-available-clients": 3,
        "output-root": str(tmp_path / "runs"),
    }
    result = launch(run_config, num_supernodes=3, workdir=tmp_path / "launch", timeout=600)
    assert result.returncode == 0 and result.run_dir is not None, result.output[-3000:]
    assert "FedLTN Jump-Start: cohort" in result.output
    clients = pd.read_parquet(result.run_dir / "clients.parquet")
    assert (clients["status"] == "ok").all()
    train = clients[clients["phase"] == "train"]
    assert train.groupby("round")["partition_id"].count().tolist() == [1, 1, 1]  # cohort only
    assert train["density"].tolist() == pytest.approx([0.8, 0.64, 0.512], abs=0.002)
    comm = pd.read_parquet(result.run_dir / "comm.parquet")
    up = comm[(comm["kind"] == "train") & (comm["direction"] == "up")]
    # the round-1 upload is the pruned LTN (17,400 of 21,750 weights) + 90 biases, float32,
    # with about 19 header bytes per tensor; BN (160 parameters, 160 statistics) would add 1,280 B
    first = up.iloc[0]
    values = first["payload_bytes"] - first["position_bytes"]
    assert 4 * (17_400 + 90) <= values <= 4 * (17_400 + 90) + 8 * 24
