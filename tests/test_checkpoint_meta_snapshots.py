"""Client-state snapshot metadata, checked field by field before use (issue #19): the good
snapshot loads its records in order; each bad field gives ``ClientStateError`` naming the file,
the field and the fix, or with rebuild a fresh client (other clients' records untouched)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedticket.store.checkpoints import META, read_archive, write_archive
from fedticket.store.snapshots import ClientSnapshots, ClientStateError
from tests.checkpoint_meta_helpers import DROP, MASK, with_field, write_raw

PID = 7


OWN = f"fedticket.{PID}."


def _client_state() -> RecordDict:
    state = RecordDict()
    state[f"{OWN}counters"] = ConfigRecord({"prunes": 3, "kept-rate": 0.5, "ids": [1, 2]})
    state[f"{OWN}mask"] = ArrayRecord(
        {"b.weight": Array(MASK), "a.weight": Array(np.ones(3, np.float32))}
    )
    state["fedticket.99.counters"] = ConfigRecord({"other": 1})  # another client: untouched
    return state


def _snapshot(tmp_path) -> tuple[ClientSnapshots, Path, dict[str, np.ndarray], dict]:
    store = ClientSnapshots(tmp_path, PID)
    store.save(_client_state(), server_round=1, checkpoint_round=0)
    path = store.directory / "r000001.npz"
    arrays, meta = read_archive(path)
    return store, path, arrays, meta


def test_a_good_snapshot_loads_its_records_in_order(tmp_path) -> None:
    store, _path, _arrays, _meta = _snapshot(tmp_path)
    state = RecordDict()
    assert store.load_into(state, before=2) == 1
    assert dict(state[f"{OWN}counters"]) == {"prunes": 3, "kept-rate": 0.5, "ids": [1, 2]}
    assert list(state[f"{OWN}mask"].keys()) == ["b.weight", "a.weight"]


MASK_RECORD = f"{OWN}mask"


SNAPSHOT_CASES = [
    ("configs", "configs", DROP),
    ("configs", "configs", [1]),
    ("configs", "configs", {f"{OWN}counters": None}),
    ("configs", "configs", {f"{OWN}counters": {"a": None}}),  # Flower's TypeError
    ("configs", "configs", {f"{OWN}counters": {"a": [1, "x"]}}),
    ("configs", "configs", {f"{OWN}counters": {"a": {"b": 1}}}),
    ("configs", "configs", {"fedticket.99.counters": {"a": 1}}),  # another client's record
    ("configs", "configs", {OWN: {"a": 1}}),
    ("order", "order", DROP),
    ("order", "order", {MASK_RECORD: ["b.weight", "a.weight", "c.weight"]}),  # not in file
    ("order", "order", {MASK_RECORD: "b.weight"}),
    ("order", "order", {MASK_RECORD: ["b.weight", "b.weight", "a.weight"]}),
    ("order", "order", {MASK_RECORD: ["b.weight", 1]}),
    ("arrays", "arrays", DROP),
    ("arrays", "arrays", [f"{OWN}other"]),
    ("arrays", "arrays", MASK_RECORD),
]


def _snapshot_refused(store, path, field, caplog) -> None:
    with pytest.raises(ClientStateError) as caught:
        store.load_into(RecordDict(), before=2)
    message = str(caught.value)
    assert message.startswith(f"client partition {PID}: state snapshot {path}: '{field}'")
    assert message.endswith(
        "set --run-config 'client-state-rebuild=true' to start this client fresh"
    )
    state = _client_state()
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert store.load_into(state, before=2, rebuild=True) is None
    assert f"{path}: '{field}'" in caplog.text and "starting this client fresh" in caplog.text
    assert list(state) == ["fedticket.99.counters"]


@pytest.mark.parametrize(("field", "key", "value"), SNAPSHOT_CASES)
def test_each_bad_snapshot_field_is_refused_or_rebuilt(tmp_path, caplog, field, key, value):
    store, path, arrays, meta = _snapshot(tmp_path)
    write_archive(path, arrays, with_field(meta, key, value))
    _snapshot_refused(store, path, field, caplog)


def test_a_record_in_both_configs_and_order_is_refused(tmp_path, caplog) -> None:
    store, path, arrays, meta = _snapshot(tmp_path)
    configs = meta["configs"] | {MASK_RECORD: {"a": 1}}
    write_archive(path, arrays, meta | {"configs": configs})
    _snapshot_refused(store, path, "order", caplog)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (f"{MASK_RECORD}//c.weight", np.ones(2)),  # an array that no record names
        (f"{MASK_RECORD}//a.weight", np.array(["x", "y", "z"])),  # not a number array
    ],
)
def test_a_foreign_snapshot_array_is_refused_naming_it(tmp_path, caplog, name, value) -> None:
    store, path, arrays, meta = _snapshot(tmp_path)
    write_archive(path, arrays | {name: value}, meta)
    _snapshot_refused(store, path, name, caplog)


def test_snapshot_metadata_that_is_not_an_object_is_refused(tmp_path, caplog) -> None:
    store, path, arrays, _meta = _snapshot(tmp_path)
    write_raw(path, arrays, "configs")
    _snapshot_refused(store, path, META, caplog)
