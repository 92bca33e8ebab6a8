"""``<output-root>/<algorithm>/latest`` (issue #25): the most recently started run of each
algorithm, found without knowing its config hash; replaced atomically, one per algorithm."""

from __future__ import annotations

import os

import pytest

from fedticket.config import RunConfig
from fedticket.simulations.server_app import run_federation
from fedticket.store.results import LATEST, RunDirectory
from tests.loopback import LoopbackGrid, three_client_config

pytestmark = pytest.mark.usefixtures("flower_task_identity")


def test_latest_points_at_the_newest_run_and_is_replaced_not_duplicated(tmp_path) -> None:
    first = RunDirectory(tmp_path, "lotteryfl", "aaaa")
    second = RunDirectory(tmp_path, "lotteryfl", "bbbb")
    other = RunDirectory(tmp_path, "fedavg", "cccc")
    for run in (first, second, other):
        run.path.mkdir(parents=True)
    assert first.mark_latest() and second.mark_latest() and other.mark_latest()
    link = tmp_path / "lotteryfl" / LATEST
    assert os.readlink(link) == "bbbb"  # relative: the output root can move
    assert link.resolve() == second.path.resolve()
    assert (tmp_path / "fedavg" / LATEST).resolve() == other.path.resolve()
    assert sorted(p.name for p in (tmp_path / "lotteryfl").iterdir()) == ["aaaa", "bbbb", LATEST]


def test_a_run_marks_itself_latest_when_it_starts(tmp_path) -> None:
    config = three_client_config(tmp_path, **{"num-rounds": 1, "partitioner": "sampled"})
    strategy = run_federation(LoopbackGrid(3, config), RunConfig.from_run_config(config))
    latest = tmp_path / "lotteryfl" / LATEST
    assert latest.resolve() == strategy.run_dir.path.resolve()
    assert (latest / "rounds.parquet").exists()
