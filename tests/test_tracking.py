"""Experiment tracking (issue #25): ``tracking="tensorboard"`` writes event files that
TensorBoard's own reader loads, one scalar per finite rounds.parquet column, step = round,
equal to the table; the key leaves the config hash alone; no tracker, no files."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from fedticket.config import RunConfig
from fedticket.simulations.server_app import run_federation
from fedticket.store.tracking import TENSORBOARD_DIR, scalar_tag
from tests.loopback import LoopbackGrid, three_client_config

pytestmark = pytest.mark.usefixtures("flower_task_identity")


def _run(root, **overrides):
    config = three_client_config(root, **{"partitioner": "sampled"} | overrides)
    return run_federation(LoopbackGrid(3, config), RunConfig.from_run_config(config))


def test_tensorboard_event_files_hold_every_round_as_the_table_does(tmp_path) -> None:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    strategy = _run(tmp_path, tracking="tensorboard")
    log_dir = strategy.run_dir.path / TENSORBOARD_DIR
    events = event_accumulator.EventAccumulator(str(log_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    rounds = pd.read_parquet(strategy.run_dir.path / "rounds.parquet")
    for column in ("served_accuracy", "global_accuracy", "message_bytes_up", "seconds"):
        scalars = events.Scalars(scalar_tag(column))
        assert [s.step for s in scalars] == rounds["round"].tolist()
        assert [s.value for s in scalars] == pytest.approx(rounds[column].tolist(), rel=1e-6)
    finite = [c for c in rounds if c != "round" and all(math.isfinite(v) for v in rounds[c])]
    assert {scalar_tag(c) for c in finite} <= tags
    assert scalar_tag("served_accuracy") == "accuracy/served_accuracy"
    assert scalar_tag("message_bytes_up") == "bytes/message_bytes_up"


def test_no_tracking_writes_no_event_files_and_the_key_is_not_in_the_hash(tmp_path) -> None:
    strategy = _run(tmp_path)
    assert not (strategy.run_dir.path / TENSORBOARD_DIR).exists()
    plain = RunConfig.from_run_config({})
    tracked = RunConfig.from_run_config({"tracking": "tensorboard"})
    assert plain.config_hash() == tracked.config_hash()
