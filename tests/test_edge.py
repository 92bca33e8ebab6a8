"""Edge tooling without processes: certificates, node keys, the byte relay, per-client traffic
columns, and what a restarted SuperNode (lost ``context.state``) does to a run."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading

import numpy as np
import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import Context, RecordDict

from fedticket.config import RunConfig
from fedticket.simulations.edge.certs import make_node_key, make_server_certificates
from fedticket.simulations.edge.relay import ByteRelay
from fedticket.simulations.server_app import run_federation
from fedticket.sparse.device_budgets import DeviceClassError, device_class
from fedticket.strategies.reporting import with_traffic
from tests.loopback import LoopbackGrid


def test_server_certificate_is_signed_by_the_run_ca_for_loopback(tmp_path) -> None:
    paths = make_server_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert paths.server_key.stat().st_mode & 0o777 == 0o600


def test_node_keys_are_openssh_ec_pairs(tmp_path) -> None:
    private, public = make_node_key(tmp_path, "node0")
    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert serialization.load_ssh_public_key(public.read_bytes()) == key.public_key()


def test_relay_forwards_unchanged_and_counts_each_direction() -> None:
    server = socket.create_server(("127.0.0.1", 0))

    def echo_twice() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while len(data) < 1000:
                data += conn.recv(4096)
            conn.sendall(data * 2)

    threading.Thread(target=echo_twice, daemon=True).start()
    with ByteRelay(server.getsockname()) as relay:
        with socket.create_connection(("127.0.0.1", relay.port)) as client:
            client.sendall(bytes(range(250)) * 4)
            received = b""
            while len(received) < 2000:
                received += client.recv(4096)
        assert received == (bytes(range(250)) * 4) * 2
        assert (relay.up, relay.down, relay.connections) == (1000, 2000, 1)
    server.close()


def test_device_class_is_declared_or_simulated() -> None:
    assert device_class({"device-class": "pi4"}) == "pi4"
    assert device_class({}) == "simulated"
    with pytest.raises(DeviceClassError, match="use one of: pi4"):
        device_class({"device-class": "pi3"})


def test_client_rows_get_their_messages_bytes_and_transfer_time() -> None:
    clients = pd.DataFrame(
        [
            {"round": 1, "partition_id": 0, "phase": "train", "status": "ok"},
            {"round": 1, "partition_id": 1, "phase": "train", "status": "timeout"},
        ]
    )
    comm = pd.DataFrame(
        [
            (1, 0, "down", "train", 100, 0.5),
            (1, 0, "up", "train", 40, 0.25),
            (1, 1, "down", "train", 90, np.nan),
            (1, 0, "down", "evaluate", 7, 0.1),
        ],
        columns=["round", "partition_id", "direction", "kind", "message_bytes", "transfer_seconds"],
    )
    rows = with_traffic(clients, comm).set_index("partition_id")
    assert rows.loc[0, "message_bytes_down"] == 100 and rows.loc[0, "message_bytes_up"] == 40
    assert rows.loc[0, "transfer_seconds"] == 0.75
    assert rows.loc[1, "message_bytes_down"] == 90 and np.isnan(rows.loc[1, "message_bytes_up"])
    assert np.isnan(rows.loc[1, "transfer_seconds"])


def _config(tmp_path, rounds: int) -> dict:
    return {
        "algorithm": "lotteryfl",
        "num-rounds": rounds,
        "partitioner": "iid",
        "acc-threshold": -1.0,
        "min-train-clients": 3,
        "min-evaluate-clients": 3,
        "min-available-clients": 3,
        "evaluate-every": rounds,
        "output-root": str(tmp_path),
    }


@pytest.mark.usefixtures("flower_task_identity")
def test_a_restarted_node_with_the_same_id_is_rebuilt_after_one_lost_round(
    tmp_path, caplog
) -> None:
    """SuperNode auth keeps the node id across a restart, but the new process has an empty
    ``context.state``: the cached mask cannot be used, that round fails for that client with a
    clear line, the mask is resent and the prune schedule goes on from the mask."""
    run_config = _config(tmp_path, 4)
    grid = LoopbackGrid(3, run_config)
    grid.before[(3, 1, "train")] = lambda context: context.state.__init__()  # restart
    with caplog.at_level(logging.WARNING, logger="flwr"):
        strategy = run_federation(grid, RunConfig.from_run_config(run_config))
    rows = pd.DataFrame(strategy.client_rows)
    train = rows[rows["phase"] == "train"].set_index(["round", "partition_id"])
    assert train.loc[(3, 1), "status"] == "error"
    assert "stale mask state" in train.loc[(3, 1), "reason"]
    assert "partition 1 lost its client state" in caplog.text
    assert "partition 1 holds no mask in round 3 although the server cached one" in caplog.text
    assert train.loc[(4, 1), "status"] == "ok"
    # round 4: the kept rate came from the resent mask (0.8^2), so one more step gives 0.8^3
    assert train.loc[(4, 1), "density"] == pytest.approx(train.loc[(3, 0), "density"], rel=1e-3)


@pytest.mark.usefixtures("flower_task_identity")
def test_a_node_that_rejoins_with_a_new_id_takes_over_its_partition(tmp_path, caplog) -> None:
    run_config = _config(tmp_path, 3)
    grid = LoopbackGrid(3, run_config)

    def restart_with_new_id(context: Context) -> None:
        old = grid.contexts.pop(1001)
        grid.contexts[2001] = Context(
            run_id=1,
            node_id=2001,
            node_config=old.node_config,
            state=RecordDict(),
            run_config=old.run_config,
        )

    grid.before[(1, 1, "evaluate")] = lambda context: None
    grid.before[(1, 2, "train")] = restart_with_new_id  # between rounds 1 and 2
    with caplog.at_level(logging.WARNING, logger="flwr"):
        strategy = run_federation(grid, RunConfig.from_run_config(run_config))
    assert "partition 1 rejoined as node 2001 (was node 1001)" in caplog.text
    rows = pd.DataFrame(strategy.client_rows)
    later = rows[(rows["round"] >= 2) & (rows["phase"] == "train")]
    assert (later["status"] == "ok").all() and set(later["partition_id"]) == {0, 1, 2}
    comm = strategy.ledger.to_frame()
    resent = comm[(comm["round"] == 2) & (comm["node_id"] == 2001) & (comm["direction"] == "down")]
    assert (resent["position_bytes"] > 0).all()  # the new process gets its mask again


def test_a_device_can_keep_its_data_elsewhere() -> None:
    from fedticket.clients.node import NodeConfigError, with_node_data_dir

    config = RunConfig.from_run_config({"dataset": "mnist-idx", "data-dir": "/srv/mnist"})
    assert with_node_data_dir(config, {}).data_dir == "/srv/mnist"
    assert with_node_data_dir(config, {"data-dir": "/media/sd/mnist"}).data_dir == "/media/sd/mnist"
    with pytest.raises(NodeConfigError, match="data-dir"):
        with_node_data_dir(config, {"data-dir": 3})
