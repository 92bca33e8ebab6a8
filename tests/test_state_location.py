"""The client's trust boundary on disk: a server names a snapshot set, never a path; the
client writes only under its node config's ``state-dir`` or its own default root."""

from __future__ import annotations

import pytest

from fedticket.clients.state_location import (
    StateLocationError,
    default_state_root,
    snapshots_for,
    state_root,
)
from fedticket.config import RunConfig
from fedticket.simulations.server_app import run_federation
from fedticket.wire.protocol import Instructions, ProtocolError
from tests.loopback import LoopbackGrid, three_client_config

pytestmark = pytest.mark.usefixtures("flower_task_identity")
KEY = "0123456789abcdef"


def test_default_root_follows_the_clients_own_environment(tmp_path) -> None:
    assert default_state_root({"FEDTICKET_STATE_HOME": "/a"}).as_posix() == "/a"
    xdg = default_state_root({"XDG_STATE_HOME": "/s"}).as_posix()
    assert xdg == "/s/fedticket/client-state"
    assert default_state_root({}).parts[-4:] == (".local", "state", "fedticket", "client-state")


def test_the_node_operators_state_dir_wins_and_the_server_names_only_a_key(tmp_path) -> None:
    node = {"state-dir": str(tmp_path / "mine")}
    header = Instructions.parse({"server-round": 1, "algorithm": "fedavg", "state-key": KEY})
    snapshots = snapshots_for(node, header.state_key, 3)
    assert snapshots is not None and snapshots.directory == tmp_path / "mine" / KEY / "3"
    assert snapshots_for(node, None, 3) is None  # no key: memory state
    with pytest.raises(ProtocolError, match=r"unknown fields \['state-dir'\]"):
        Instructions.parse({"server-round": 1, "algorithm": "fedavg", "state-dir": "/etc"})
    assert state_root({}) == default_state_root()


@pytest.mark.parametrize(
    "key", ["../../etc", "/etc/passwd", "0123456789ABCDEF", "abc", "0123456789abcdef/..", 7]
)
def test_a_server_key_that_is_not_16_hex_digits_is_refused(key) -> None:
    with pytest.raises(ProtocolError, match="expected 16 hex digits"):
        Instructions.parse({"server-round": 1, "algorithm": "fedavg", "state-key": key})


@pytest.mark.parametrize("bad", ["", 5, "a\x00b", "tab\there"])
def test_a_bad_node_state_dir_is_refused(bad) -> None:
    with pytest.raises(StateLocationError, match="state-dir"):
        state_root({"state-dir": bad})


def test_a_server_naming_a_path_writes_nothing_there(tmp_path, client_state_home) -> None:
    """A header that names a directory (as the server did before) is refused by that client
    (it fails the round, named); nothing is written there, the others keep their state
    under their own root."""
    victim = tmp_path / "victim"
    config = three_client_config(
        tmp_path / "runs",
        **{"client-state": "disk", "min-train-clients": 2, "min-evaluate-clients": 2},
    )
    grid = LoopbackGrid(3, config)
    original = grid.send_and_receive

    def forge(messages, *, timeout=None):
        for message in messages:
            if message.metadata.dst_node_id == 1001:
                message.content["config"]["state-dir"] = str(victim)
        return original(messages, timeout=timeout)

    grid.send_and_receive = forge
    strategy = run_federation(grid, RunConfig.from_run_config(config))
    assert not victim.exists()
    failed = [r for r in strategy.client_rows if r["status"] != "ok"]
    assert {r["partition_id"] for r in failed} == {1}
    assert all("unknown fields ['state-dir']" in r["reason"] for r in failed)
    key = (strategy.run_dir.path / "client-state-key").read_text()
    assert key == strategy.state_key
    assert sorted(p.name for p in (client_state_home / key).iterdir()) == ["0", "2"]


def test_a_forged_key_fails_that_client_not_the_run(tmp_path) -> None:
    config = three_client_config(
        tmp_path, **{"client-state": "disk", "min-train-clients": 2, "min-evaluate-clients": 2}
    )
    grid = LoopbackGrid(3, config)
    original = grid.send_and_receive

    def forge(messages, *, timeout=None):
        for message in messages:
            if message.metadata.dst_node_id == 1001:
                message.content["config"]["state-key"] = "../../../../tmp/x"
        return original(messages, timeout=timeout)

    grid.send_and_receive = forge
    strategy = run_federation(grid, RunConfig.from_run_config(config))
    failed = [r for r in strategy.client_rows if r["status"] != "ok"]
    assert {r["partition_id"] for r in failed} == {1}
    assert all("expected 16 hex digits" in r["reason"] for r in failed)
