"""A failed run says so: ``status.json`` in its directory, and a non-zero exit from the
launcher and the compare command (Flower 1.39's ``flwr run`` exits 0 however the ServerApp
ended)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedticket.config import RunConfig
from fedticket.simulations import launcher, server_app
from fedticket.simulations.server_app import run_federation
from fedticket.store.results import load_run
from tests.loopback import LoopbackGrid, three_client_config

pytestmark = pytest.mark.usefixtures("flower_task_identity")


def test_the_launcher_reads_the_server_apps_failure_line() -> None:
    line = f"{server_app.FAILED_LINE} run-config key 'lr': must be a finite number, got nan"
    assert launcher.FAILED_LINE.search(line)
    failed = launcher.LaunchResult.from_output(0, f"INFO : {line}\n", 3.0)
    assert failed.returncode == 1 and "must be a finite number" in failed.failure
    silent = launcher.LaunchResult.from_output(0, "INFO : nothing\n", 3.0)
    assert silent.returncode == 1 and "no results directory" in silent.failure
    done = launcher.LaunchResult.from_output(0, "fedticket: results in /tmp/r/x\n", 3.0)
    assert done.returncode == 0 and done.failure == "" and done.run_dir == Path("/tmp/r/x")
    crashed = launcher.LaunchResult.from_output(137, "fedticket: results in /tmp/r/x\n", 3.0)
    assert crashed.returncode == 137


def test_a_finished_run_is_marked_completed(tmp_path) -> None:
    config = three_client_config(tmp_path, **{"num-rounds": 1})
    strategy = run_federation(LoopbackGrid(3, config), RunConfig.from_run_config(config))
    status = load_run(strategy.run_dir.path)["status"]
    assert status == {"status": "completed", "rounds": 1, "reason": ""}


def test_a_run_stopped_mid_way_is_marked_failed_with_its_reason(tmp_path) -> None:
    config = three_client_config(tmp_path, **{"num-rounds": 3})
    grid = LoopbackGrid(3, config)

    def power_cut(context) -> None:
        raise KeyboardInterrupt

    grid.before[(2, 0, "train")] = power_cut
    with pytest.raises(KeyboardInterrupt):
        run_federation(grid, RunConfig.from_run_config(config))
    run_dir = (tmp_path / "lotteryfl" / "latest").resolve()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["rounds"] == 1
    assert status["reason"].startswith("KeyboardInterrupt")
