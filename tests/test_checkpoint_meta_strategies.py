"""Algorithm state in a checkpoint (FLASH's consensus and levels, FedLTN's velocity, ticket and
cohort), checked field by field before use (issue #19): it round-trips, and each bad field is
refused naming the file and the field before any client connects."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from fedticket.config import RunConfig
from fedticket.store.checkpoints import (
    CheckpointError,
    load_checkpoint,
    read_archive,
    split_prefix,
    write_archive,
)
from fedticket.store.results import RunDirectory
from fedticket.strategies.fedltn import FedLTN
from fedticket.strategies.flash import Flash
from tests.checkpoint_meta_helpers import DROP, MASK, TEMPLATE, nan_at, with_field


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
        arrays = with_field(arrays, field, value)
    else:
        meta = meta | {"extra": with_field(meta["extra"], field.removeprefix("extra."), value)}
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
    ("extra/velocity/fc.weight", nan_at(0, (2, 3), math.nan), True),
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
