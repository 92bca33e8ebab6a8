"""``fedticket runs`` (issue #25): every run under an output root, newest first, named by its
algorithm, status, rounds, accuracy and what it changes; ``*`` on each algorithm's latest; a
folder that is not a run is skipped, a damaged one listed with what can be read."""

from __future__ import annotations

import os

import pytest

from fedticket.analysis.runs_index import list_runs, main
from fedticket.config import RunConfig
from fedticket.simulations.server_app import run_federation
from tests.loopback import LoopbackGrid, three_client_config

pytestmark = pytest.mark.usefixtures("flower_task_identity")


def _run(root, **overrides):
    config = three_client_config(root, **{"num-rounds": 1, "partitioner": "sampled"} | overrides)
    return run_federation(LoopbackGrid(3, config), RunConfig.from_run_config(config)).run_dir


def test_runs_are_listed_newest_first_with_latest_marked(tmp_path, capsys) -> None:
    older = _run(tmp_path, **{"lr": 0.05})
    newer = _run(tmp_path, **{"lr": 0.02})
    (tmp_path / "lotteryfl" / "not-a-run").mkdir()
    damaged = tmp_path / "fedavg" / "0123456789ab"
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_text("{not json")
    for path, started in ((older.path, 1e6), (damaged, 2e6), (newer.path, 3e6)):
        os.utime(path / "config.json", (started, started))
    entries = list_runs(tmp_path)
    assert [e["run"] for e in entries] == [f"{newer.path.name} *", damaged.name, older.path.name]
    by_run = {e["run"].rstrip(" *"): e for e in entries}
    assert by_run[older.path.name]["changes"].split() == [
        "acc-threshold=-1.0",
        "lr=0.05",
        "min-available-clients=3",
        "min-evaluate-clients=3",
        "min-train-clients=3",
        "num-rounds=1",
        "partitioner=sampled",
    ]
    assert by_run[newer.path.name]["status"] == "completed"
    assert by_run[newer.path.name]["rounds"] == "1/1"
    assert 0 <= by_run[newer.path.name]["served"] <= 1
    assert by_run[damaged.name]["status"] == "?" and by_run[damaged.name]["changes"] == ""
    assert "not-a-run" not in by_run
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == [
        "algorithm",
        "run",
        "status",
        "rounds",
        "served",
        "started",
        "changes",
    ]
    assert f"{newer.path.name} *" in out


def test_an_empty_or_missing_root_has_no_runs(tmp_path, capsys) -> None:
    assert list_runs(tmp_path / "nowhere") == []
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no runs"
