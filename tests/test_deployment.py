"""The Deployment Engine on loopback: a real SuperLink and SuperNodes (gRPC, TLS, SuperNode
authentication), the refused nodes, a node killed mid-run, and the bytes on the wire."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from fedticket.config import RunConfig
from fedticket.simulations.edge.certs import make_node_key
from fedticket.simulations.edge.federation import EdgeNode, LoopbackFederation
from fedticket.simulations.edge.flower_fleet import fleet_started_line
from fedticket.simulations.processes import free_port, stop_group
from fedticket.store.results import read_table, resolve_output_root

pytestmark = pytest.mark.slow


def _wait_exit(processes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p.poll() is None for p in processes):
        time.sleep(0.5)


def test_tls_authenticated_federation_refuses_strangers_and_survives_a_lost_node(
    tmp_path,
) -> None:
    run_config = {
        "algorithm": "lotteryfl",
        "num-rounds": 2,
        "min-available-clients": 3,
        "min-train-clients": 3,
        "min-evaluate-clients": 3,
        "round-timeout": 40.0,
        "output-root": str(tmp_path / "runs"),
    }
    run_dir = (
        resolve_output_root(run_config["output-root"])
        / "lotteryfl"
        / RunConfig.from_run_config(run_config).config_hash()
    )
    with LoopbackFederation(
        tmp_path / "edge", 3, device_classes=["pi4", "pi5", "jetson"], relay=True
    ) as federation:
        # a SuperNode whose key was never registered, and one that speaks plain text
        key, _ = make_node_key(tmp_path / "keys", "stranger")
        stranger = EdgeNode(0, None, free_port(), tmp_path / "stranger.log")
        plain = EdgeNode(1, None, free_port(), tmp_path / "plain.log")
        refused = [
            federation.start_node(stranger, key=key),
            federation.start_node(
                plain, plaintext=True, extra_args=["--max-retries", "2", "--max-wait-time", "10"]
            ),
        ]
        _wait_exit(refused, 60)
        for process in refused:
            stop_group(process)
        assert refused[0].returncode not in (None, 0), "an unregistered key was let in"
        assert "Failed to activate SuperNode" in stranger.log_path.read_text()
        assert refused[1].returncode not in (None, 0), "a plain-text node was let in"
        assert "could not establish a connection" in plain.log_path.read_text()

        def kill_after_round_one() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                rounds = run_dir / "rounds.parquet"
                if rounds.exists() and len(read_table(rounds)) >= 1:
                    federation.kill_node(2)
                    return
                time.sleep(0.5)

        killer = threading.Thread(target=kill_after_round_one, daemon=True)
        killer.start()
        result = federation.run(run_config, timeout=400)
        killer.join(timeout=5)
        relay_up, relay_down = federation.relay.up, federation.relay.down
    assert result.returncode == 0 and result.run_dir == run_dir, result.output[-3000:]
    assert fleet_started_line() in (tmp_path / "edge" / "superlink.log").read_text()
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    clients = pd.read_parquet(run_dir / "clients.parquet")
    comm = pd.read_parquet(run_dir / "comm.parquet")
    assert rounds["round"].tolist() == [1, 2]
    first = clients[clients["round"] == 1]
    assert (first["status"] == "ok").all() and len(first) == 6
    assert dict(zip(first["partition_id"], first["device_class"], strict=False)) == {
        0: "pi4",
        1: "pi5",
        2: "jetson",
    }
    second = clients[(clients["round"] == 2) & (clients["phase"] == "train")]
    assert set(second.loc[second["status"] == "ok", "partition_id"]) == {0, 1}
    assert set(second.loc[second["status"] != "ok", "partition_id"]) == {2}  # the killed node
    assert rounds.loc[1, "train_clients"] == 2
    ok = clients[clients["status"] == "ok"]
    assert (ok["message_bytes_down"] > 0).all() and (ok["message_bytes_up"] > 0).all()
    # the wire carries every ledger message plus gRPC / HTTP/2 / TLS framing and polling
    ledger_up = comm.loc[comm["direction"] == "up", "message_bytes"].sum()
    ledger_down = comm.loc[comm["direction"] == "down", "message_bytes"].sum()
    assert relay_up > ledger_up and relay_down > ledger_down
    print(
        f"wire/ledger bytes: up {relay_up}/{ledger_up} = {relay_up / ledger_up:.3f}, "
        f"down {relay_down}/{ledger_down} = {relay_down / ledger_down:.3f}"
    )
