"""Checkpoint and client-state snapshot metadata, checked field by field before use (issue #19):
each bad field of a real archive is refused with an error naming the file, the field and the
fix; the good archive loads. Snapshots: ``ClientStateError``, or with rebuild a fresh client."""

from __future__ import annotations

import io
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedticket.config import RunConfig
from fedticket.store.checkpoints import (
    META,
    CheckpointError,
    load_checkpoint,
    read_archive,
    split_prefix,
    write_archive,
)
from fedticket.store.results import RunDirectory
from fedticket.store.snapshots import ClientSnapshots, ClientStateError
from strategies.fedltn import FedLTN
from strategies.flash import Flash

HASH = "0123456789ab"
DROP = object()  # a case that removes the field
TEMPLATE = {"fc.weight": np.zeros((2, 3), np.float32), "fc.bias": np.zeros(2, np.float32)}
MASK = np.array([[True, False, True], [False, True, False]])


def _write_raw(path: Path, arrays: dict[str, np.ndarray], meta: object) -> None:
    """An archive whose metadata is any JSON value (``write_archive`` takes a mapping)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{META: np.frombuffer(json.dumps(meta).encode(), np.uint8)}, **arrays)
    path.write_bytes(buffer.getvalue())


def _with(mapping: dict, key: str, value: object) -> dict:
    changed = dict(mapping)
    if value is DROP:
        del changed[key]
    else:
        changed[key] = value
    return changed


def _refused(path: Path, field: str, **kwargs) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, HASH, **kwargs)
    message = str(caught.value)
    assert str(path) in message and f"'{field}'" in message, message
    assert message.endswith("delete it, or start fresh with --run-config 'resume=false'")
    return message


# ---------------------------------------------------------------------- server checkpoints
def _good_arrays() -> dict[str, np.ndarray]:
    return {
        "global/fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "global/fc.bias": np.ones(2, np.float32),
        "masks/0/fc.weight": MASK,
        "masks/12/fc.weight": ~MASK,
        "extra/anything": np.ones(1),
    }


def _good_meta() -> dict:
    return {
        "round": 3,
        "config-hash": HASH,
        "algorithm": "fedavg",
        "held": {"0": "ab12", "12": ""},
        "rng": np.random.default_rng([0, 0x5A4D]).bit_generator.state,
        "reference-best": {"0": 0.5, "12": math.nan},  # NaN: no score yet
        "extra": {},
    }


FULL = {"algorithm": "fedavg", "template": TEMPLATE}


def _pcg(**state) -> dict:
    good = np.random.default_rng(0).bit_generator.state
    return good | {"state": good["state"] | state}


def test_a_good_checkpoint_loads_and_gives_back_what_was_written(tmp_path) -> None:
    path = tmp_path / "checkpoint.npz"
    write_archive(path, _good_arrays(), _good_meta())
    arrays, meta = load_checkpoint(path, HASH, **FULL)
    assert meta["round"] == 3 and meta["held"] == {"0": "ab12", "12": ""}
    assert math.isnan(meta["reference-best"]["12"])
    assert np.array_equal(arrays["masks/12/fc.weight"], ~MASK)
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    assert rng.integers(1 << 30) == np.random.default_rng([0, 0x5A4D]).integers(1 << 30)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("round", DROP),
        ("round", True),  # a bool is an int in Python
        ("round", -1),
        ("round", 2.0),
        ("round", "3"),
        ("config-hash", DROP),
        ("config-hash", 12),
        ("algorithm", DROP),
        ("algorithm", None),
        ("algorithm", "flash"),
        ("held", DROP),
        ("held", ["ab12"]),
        ("held", {"p0": "ab12"}),
        ("held", {"-1": "ab12"}),
        ("held", {"07": "ab12"}),
        ("held", {"0": 5}),
        ("rng", DROP),
        ("rng", "PCG64"),
        ("rng", {}),
        ("rng", np.random.MT19937(0).state | {"state": {"key": [], "pos": 0}}),
        ("rng", _pcg(state=-1)),
        ("rng", _pcg(state=1.5)),  # numpy truncates it silently
        ("rng", _pcg(state="1")),
        ("rng", {k: v for k, v in _pcg().items() if k != "has_uint32"}),
        ("reference-best", DROP),
        ("reference-best", {"0": math.inf}),
        ("reference-best", {"0": True}),
        ("reference-best", {"0": "0.5"}),
        ("reference-best", {"zero": 0.5}),
        ("reference-best", [0.5]),
        ("extra", DROP),
        ("extra", []),
    ],
)
def test_each_bad_meta_field_is_refused_naming_it(tmp_path, field, value) -> None:
    path = tmp_path / "checkpoint.npz"
    write_archive(path, _good_arrays(), _with(_good_meta(), field, value))
    message = _refused(path, field, **FULL)
    if value is DROP:
        assert f"'{field}' is missing" in message


def test_another_configs_checkpoint_names_both_hashes(tmp_path) -> None:
    path = tmp_path / "checkpoint.npz"
    write_archive(path, _good_arrays(), _with(_good_meta(), "config-hash", "fedcba987654"))
    message = _refused(path, "config-hash")
    assert "belongs to config 'fedcba987654', not '0123456789ab'" in message


def test_metadata_that_is_not_an_object_is_refused(tmp_path) -> None:
    path = tmp_path / "checkpoint.npz"
    _write_raw(path, _good_arrays(), [1, 2])
    _refused(path, META)


def _nan_at(index: int, shape: tuple[int, ...], value: float) -> np.ndarray:
    array = np.zeros(shape, np.float32)
    array.flat[index] = value
    return array


@pytest.mark.parametrize(
    ("field", "name", "value"),
    [
        ("global/fc.bias", "global/fc.bias", DROP),
        ("global/fc.weight", "global/fc.weight", np.zeros((3, 2), np.float32)),
        ("global/fc.weight", "global/fc.weight", np.zeros((2, 3), np.float64)),
        ("global/fc.weight", "global/fc.weight", _nan_at(4, (2, 3), math.nan)),
        ("global/fc.bias", "global/fc.bias", _nan_at(1, (2,), -math.inf)),
        ("global/conv.weight", "global/conv.weight", np.zeros(3, np.float32)),
        ("weights/fc.weight", "weights/fc.weight", np.zeros((2, 3), np.float32)),
        ("masks/p0/fc.weight", "masks/p0/fc.weight", MASK),
        ("masks/0", "masks/0", MASK),
        ("masks/0/fc.weight", "masks/0/fc.weight", MASK.T),
        ("masks/0/fc.weight", "masks/0/fc.weight", MASK * 2),
        ("masks/0/fc.weight", "masks/0/fc.weight", np.full((2, 3), "1")),
        ("masks/0/conv.weight", "masks/0/conv.weight", MASK),
        ("extra", "extra", np.ones(1)),  # extra/ needs a name after it
    ],
)
def test_each_bad_array_is_refused_naming_it(tmp_path, field, name, value) -> None:
    path = tmp_path / "checkpoint.npz"
    write_archive(path, _with(_good_arrays(), name, value), _good_meta())
    _refused(path, field, **FULL)


def test_finite_global_model_and_0_1_masks_are_checked_without_a_template(tmp_path) -> None:
    path = tmp_path / "checkpoint.npz"
    arrays = _good_arrays() | {"global/other": np.zeros(4), "masks/3/any": np.array([0, 1], "u1")}
    write_archive(path, arrays, _good_meta() | {"algorithm": "lotteryfl", "round": 0})
    loaded, _meta = load_checkpoint(path, HASH)  # no algorithm, no template: names not checked
    assert set(loaded) == set(arrays)
    write_archive(path, arrays | {"global/other": np.full(4, math.nan)}, _good_meta())
    _refused(path, "global/other")


def test_the_server_refuses_a_bad_checkpoint_before_any_client_connects(tmp_path) -> None:
    from simulations.server_app import run_federation
    from tests.loopback import LoopbackGrid

    run_config = {"algorithm": "fedavg", "min-available-clients": 2, "output-root": str(tmp_path)}
    config = RunConfig.from_run_config(run_config)
    run_dir = RunDirectory(tmp_path, "fedavg", config.config_hash())
    meta = _with(_good_meta(), "held", DROP) | {"config-hash": config.config_hash()}
    write_archive(run_dir.path / "checkpoint.npz", {}, meta)
    grid = LoopbackGrid(2, run_config)
    with pytest.raises(CheckpointError, match="'held' is missing"):
        run_federation(grid, config)
    assert grid.delivered == []  # not even the handshake


# ---------------------------------------------------------------------- algorithm state
def _strategy(cls, tmp_path, **run_config):
    config = RunConfig.from_run_config({"output-root": str(tmp_path)} | run_config)
    run_dir = RunDirectory(tmp_path, cls.name, config.config_hash())
    return cls(config, TEMPLATE, run_dir, prunable=["fc.weight"])


def _flash(tmp_path) -> Flash:
    strategy = _strategy(Flash, tmp_path, algorithm="flash", **{"flash-mode": "hetero"})
    strategy.consensus = {"fc.weight": MASK}
    strategy.levels = {0.5: {"fc.weight": MASK & [[1, 0, 0], [0, 0, 0]]}, 1.0: {"fc.weight": MASK}}
    strategy._extras = {1: {"consensus_density": 0.5, "client_mask_jaccard": math.nan}}
    return strategy


def _fedltn(tmp_path) -> FedLTN:
    strategy = _strategy(FedLTN, tmp_path, algorithm="fedltn", **{"jump-start": "cohort"})
    strategy.velocity = {"fc.weight": np.full((2, 3), 0.25), "fc.bias": np.zeros(2)}
    strategy.ticket = {"fc.weight": MASK}
    strategy.cohort, strategy.jump_starting = [1], False
    strategy.prune_steps, strategy.cohort_rounds = {1: 2}, {1, 2}
    return strategy


def _saved(strategy) -> tuple[dict[str, np.ndarray], dict]:
    strategy.save_checkpoint(2, {k: np.ones_like(v) for k, v in TEMPLATE.items()})
    return read_archive(strategy.checkpoint_path)


def _load(strategy, path: Path) -> tuple[dict[str, np.ndarray], dict]:
    return load_checkpoint(
        path,
        strategy.config.config_hash(),
        algorithm=strategy.name,
        template=strategy.template,
        check_extra=strategy.check_extra,
    )


def test_flash_state_round_trips_through_a_checked_checkpoint(tmp_path) -> None:
    saved = _flash(tmp_path)
    _saved(saved)
    arrays, meta = _load(saved, saved.checkpoint_path)
    restored = _strategy(Flash, tmp_path, algorithm="flash", **{"flash-mode": "hetero"})
    restored.restore_extra(split_prefix(arrays, "extra"), meta["extra"])
    assert np.array_equal(restored.consensus["fc.weight"], MASK)
    assert sorted(restored.levels) == [0.5, 1.0]
    assert restored.levels[0.5]["fc.weight"].sum() == 1
    assert restored._extras[1]["consensus_density"] == 0.5


def test_fedltn_state_round_trips_through_a_checked_checkpoint(tmp_path) -> None:
    saved = _fedltn(tmp_path)
    _saved(saved)
    arrays, meta = _load(saved, saved.checkpoint_path)
    restored = _strategy(FedLTN, tmp_path, algorithm="fedltn", **{"jump-start": "cohort"})
    restored.restore_extra(split_prefix(arrays, "extra"), meta["extra"])
    assert restored.ticket is not None and restored.ticket["fc.weight"].dtype == bool
    assert np.array_equal(restored.velocity["fc.weight"], np.full((2, 3), 0.25))
    assert (restored.cohort, restored.jump_starting) == ([1], False)
    assert restored.prune_steps == {1: 2} and restored.cohort_rounds == {1, 2}


def _bad_extra(strategy, tmp_path, field: str, value: object, array: bool) -> Path:
    arrays, meta = _saved(strategy)
    if array:
        arrays = _with(arrays, field, value)
    else:
        meta = meta | {"extra": _with(meta["extra"], field.removeprefix("extra."), value)}
    path = tmp_path / "bad.npz"
    write_archive(path, arrays, meta)
    return path


FLASH_CASES = [
    ("extra.levels", DROP, False),
    ("extra.levels", [1.0, 0.5], False),
    ("extra.levels", [0.5, "1.0"], False),
    ("extra.levels", [0.0, 1.0], False),
    ("extra.levels", 1.0, False),
    ("extra.extras", DROP, False),
    ("extra.extras", {"1": 0.5}, False),
    ("extra.extras", {"r1": {}}, False),
    ("extra.extras", {"1": {"consensus_density": "half"}}, False),
    ("extra/consensus/fc.weight", DROP, True),
    ("extra/consensus/fc.weight", MASK.T, True),
    ("extra/consensus/fc.bias", np.ones(2, bool), True),  # not a prunable layer
    ("extra/level1/fc.weight", np.full((2, 3), 0.5), True),
    ("extra/level2/fc.weight", MASK, True),  # a third level the meta does not list
    ("extra/level1/fc.weight", DROP, True),
]


@pytest.mark.parametrize(("field", "value", "array"), FLASH_CASES)
def test_each_bad_flash_state_field_is_refused_before_clients_connect(
    tmp_path, field, value, array
) -> None:
    strategy = _flash(tmp_path)
    path = _bad_extra(strategy, tmp_path, field, value, array)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: '{field}'")):
        _load(strategy, path)
    arrays, meta = read_archive(path)  # restore_extra alone refuses it too (no KeyError)
    with pytest.raises(CheckpointError, match=re.escape(f"'{field}'")):
        strategy.restore_extra(split_prefix(arrays, "extra"), meta["extra"])


FEDLTN_CASES = [
    ("extra.cohort", DROP, False),
    ("extra.cohort", [True], False),
    ("extra.cohort", [1, 1], False),
    ("extra.jump-starting", 0, False),
    ("extra.has-ticket", DROP, False),
    ("extra.has-ticket", "yes", False),
    ("extra.prune-steps", {"1": -1}, False),
    ("extra.prune-steps", {"1": 1.5}, False),
    ("extra.prune-steps", {"one": 1}, False),
    ("extra.cohort-rounds", [0, 1], False),
    ("extra.cohort-rounds", DROP, False),
    ("extra/velocity/fc.weight", _nan_at(0, (2, 3), math.nan), True),
    ("extra/velocity/fc.weight", np.zeros(6), True),
    ("extra/velocity/fc.weight", np.zeros((2, 3), int), True),
    ("extra/velocity/bn.weight", np.zeros(2), True),
    ("extra/ticket/fc.weight", DROP, True),
    ("extra/ticket/fc.weight", MASK.astype(float) * 3, True),
    ("extra/momentum/fc.weight", np.zeros((2, 3)), True),
]


@pytest.mark.parametrize(("field", "value", "array"), FEDLTN_CASES)
def test_each_bad_fedltn_state_field_is_refused_before_clients_connect(
    tmp_path, field, value, array
) -> None:
    strategy = _fedltn(tmp_path)
    path = _bad_extra(strategy, tmp_path, field, value, array)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: '{field}'")):
        _load(strategy, path)


def test_a_fedltn_ticket_without_has_ticket_is_refused(tmp_path) -> None:
    strategy = _fedltn(tmp_path)
    path = _bad_extra(strategy, tmp_path, "extra.has-ticket", False, array=False)
    with pytest.raises(CheckpointError, match="'extra/ticket' is stored although"):
        _load(strategy, path)


# ---------------------------------------------------------------------- client snapshots
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
    write_archive(path, arrays, _with(meta, key, value))
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
    _write_raw(path, arrays, "configs")
    _snapshot_refused(store, path, META, caplog)
