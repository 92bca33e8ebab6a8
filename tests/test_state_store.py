"""The client state store (``client-state="disk"``): round trip, eviction from memory, atomic
writes, which snapshot a round loads, damaged files, and the ``auto`` threshold."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedticket.store.snapshots import ClientSnapshots, ClientStateError


def _state(pid: int, value: float) -> RecordDict:
    state = RecordDict()
    state[f"fedticket.{pid}.counters"] = ConfigRecord({"prunes": 3, "kept-rate": value})
    state[f"fedticket.{pid}.mask"] = ArrayRecord(
        {
            "b.weight": Array(np.array([[True, False], [False, True]])),
            "a.weight": Array(np.ones(3, bool)),
        }
    )
    state["fedticket.99.counters"] = ConfigRecord({"other": 1})  # another client: untouched
    return state


def test_round_trip_restores_records_in_order_and_evicts_them_from_memory(tmp_path) -> None:
    store = ClientSnapshots(tmp_path, 4)
    state = _state(4, 0.8)
    store.save(state, server_round=2, checkpoint_round=1)
    assert list(state) == ["fedticket.99.counters"]  # on disk now, not in memory
    fresh = RecordDict()
    assert store.load_into(fresh, before=3) == 2
    assert dict(fresh["fedticket.4.counters"]) == {"prunes": 3, "kept-rate": 0.8}
    mask = fresh["fedticket.4.mask"]
    assert list(mask.keys()) == ["b.weight", "a.weight"]
    assert np.array_equal(mask["b.weight"].numpy(), [[True, False], [False, True]])


def test_a_round_loads_the_newest_earlier_snapshot_and_old_ones_are_dropped(tmp_path) -> None:
    store = ClientSnapshots(tmp_path, 0)
    for server_round in (1, 2, 3, 4):
        store.save(_state(0, server_round / 10), server_round, checkpoint_round=server_round - 2)
    assert sorted(p.name for p in store.directory.iterdir()) == [
        "r000002.npz",
        "r000003.npz",
        "r000004.npz",
    ]
    state = RecordDict()
    assert store.load_into(state, before=4) == 3  # train of round 4: state after round 3
    assert dict(state["fedticket.0.counters"])["kept-rate"] == 0.3
    assert store.load_into(state, before=5) == 4  # evaluate of round 4: after its training
    assert store.load_into(RecordDict(), before=2) is None  # nothing before round 2 is kept


def test_a_failed_write_keeps_the_old_snapshot_and_leaves_no_temp_file(
    tmp_path, monkeypatch
) -> None:
    store = ClientSnapshots(tmp_path, 1)
    store.save(_state(1, 0.5), 1, 0)
    before = (store.directory / "r000001.npz").read_bytes()

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.save(_state(1, 0.9), 1, 0)
    assert (store.directory / "r000001.npz").read_bytes() == before
    assert [p.name for p in store.directory.iterdir()] == ["r000001.npz"]


def test_a_damaged_snapshot_names_the_client_and_is_rebuilt_only_when_allowed(
    tmp_path, caplog
) -> None:
    store = ClientSnapshots(tmp_path, 7)
    store.save(_state(7, 0.5), 1, 0)
    path = store.directory / "r000001.npz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ClientStateError, match=r"client partition 7: .*client-state-rebuild=true"):
        store.load_into(RecordDict(), before=2)
    state = _state(7, 0.1)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert store.load_into(state, before=2, rebuild=True) is None
    assert "starting this client fresh" in caplog.text
    assert list(state) == ["fedticket.99.counters"]


def test_auto_moves_client_state_to_disk_above_the_threshold(tmp_path) -> None:
    from fedticket.config import RunConfig
    from fedticket.store.results import RunDirectory
    from fedticket.strategies.base import NodeInfo
    from fedticket.strategies.fedavg import FedAvg

    config = RunConfig.from_run_config({"client-state-threshold": 2})
    strategy = FedAvg(config, {}, RunDirectory(tmp_path, "fedavg", "x"))
    strategy.nodes = {i: NodeInfo(i, i, 10, 2) for i in range(2)}
    assert not strategy.state_on_disk
    strategy.nodes[2] = NodeInfo(2, 2, 10, 2)
    assert strategy.state_on_disk
    memory = FedAvg(RunConfig.from_run_config({"client-state": "memory"}), {}, strategy.run_dir)
    memory.nodes = strategy.nodes
    assert not memory.state_on_disk
