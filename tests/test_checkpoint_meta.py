"""Checkpoint metadata, checked field by field before use (issue #19): each bad field of a real
server checkpoint is refused with an error naming the file, the field and the fix; the good
archive loads. Algorithm state: ``test_checkpoint_meta_strategies.py``; client-state
snapshots: ``test_checkpoint_meta_snapshots.py``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fedticket.config import RunConfig
from fedticket.store.checkpoints import META, CheckpointError, load_checkpoint, write_archive
from fedticket.store.results import RunDirectory
from tests.checkpoint_meta_helpers import DROP, HASH, MASK, TEMPLATE, nan_at, with_field, write_raw


def _refused(path: Path, field: str, **kwargs) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, HASH, **kwargs)
    message = str(caught.value)
    assert str(path) in message and f"'{field}'" in message, message
    assert message.endswith("delete it, or start fresh with --run-config 'resume=false'")
    return message


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
    write_archive(path, _good_arrays(), with_field(_good_meta(), field, value))
    message = _refused(path, field, **FULL)
    if value is DROP:
        assert f"'{field}' is missing" in message


def test_another_configs_checkpoint_names_both_hashes(tmp_path) -> None:
    path = tmp_path / "checkpoint.npz"
    write_archive(path, _good_arrays(), with_field(_good_meta(), "config-hash", "fedcba987654"))
    message = _refused(path, "config-hash")
    assert "belongs to config 'fedcba987654', not '0123456789ab'" in message


def test_metadata_that_is_not_an_object_is_refused(tmp_path) -> None:
    path = tmp_path / "checkpoint.npz"
    write_raw(path, _good_arrays(), [1, 2])
    _refused(path, META)


@pytest.mark.parametrize(
    ("field", "name", "value"),
    [
        ("global/fc.bias", "global/fc.bias", DROP),
        ("global/fc.weight", "global/fc.weight", np.zeros((3, 2), np.float32)),
        ("global/fc.weight", "global/fc.weight", np.zeros((2, 3), np.float64)),
        ("global/fc.weight", "global/fc.weight", nan_at(4, (2, 3), math.nan)),
        ("global/fc.bias", "global/fc.bias", nan_at(1, (2,), -math.inf)),
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
    write_archive(path, with_field(_good_arrays(), name, value), _good_meta())
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
    from fedticket.simulations.server_app import run_federation
    from tests.loopback import LoopbackGrid

    run_config = {"algorithm": "fedavg", "min-available-clients": 2, "output-root": str(tmp_path)}
    config = RunConfig.from_run_config(run_config)
    run_dir = RunDirectory(tmp_path, "fedavg", config.config_hash())
    meta = with_field(_good_meta(), "held", DROP) | {"config-hash": config.config_hash()}
    write_archive(run_dir.path / "checkpoint.npz", {}, meta)
    grid = LoopbackGrid(2, run_config)
    with pytest.raises(CheckpointError, match="'held' is missing"):
        run_federation(grid, config)
    assert grid.delivered == []  # not even the handshake
