"""The ``fedticket`` console command (issue #25): every subcommand answers ``--help``, the
forwarded ones reach their ``python -m`` module's options, and ``run`` checks the config
before it launches anything, then launches the isolated run with the keys as given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedticket.simulations import cli
from fedticket.simulations.launcher import LaunchResult

COMMANDS = ("run", "check", "compare", "report", "runs", "edge")


def test_the_installed_command_lists_its_subcommands() -> None:
    script = Path(sys.executable).with_name("fedticket")  # pip puts it next to python
    assert script.exists(), "no fedticket command: install the project (pip install -e .)"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: fedticket" in done.stdout
    listed = {line.strip("│ ").split(" ")[0] for line in done.stdout.splitlines()}
    assert set(COMMANDS) <= listed, done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_prints_readable_help(command, capsys) -> None:
    assert cli.main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert f"fedticket {command}" in text and "--help" in text
    assert "\x1b[" not in text  # plain text, no colour codes


def test_check_forwards_its_arguments(capsys) -> None:
    assert cli.main(["check", "--run-config", "lr=0.05 num-rounds=3"]) == 0
    assert capsys.readouterr().out.startswith("ok: lotteryfl config ")
    assert cli.main(["check", "--run-config", 'algoritm="fedavg"']) == 2
    assert "did you mean 'algorithm'?" in capsys.readouterr().err


def test_report_refuses_what_is_not_a_run_directory(tmp_path, capsys) -> None:
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_run_checks_the_config_before_launching(monkeypatch, tmp_path, capsys) -> None:
    launched: list[dict] = []

    def fake_launch(run_config, **kwargs) -> LaunchResult:
        launched.append(dict(run_config) | {"_kwargs": kwargs})
        return LaunchResult(0, "", tmp_path, 1.0)

    monkeypatch.setattr("fedticket.simulations.launcher.launch", fake_launch)
    assert cli.main(["run", "--run-config", "num-rounds=0"]) == 2
    assert "invalid: run-config key 'num-rounds'" in capsys.readouterr().err
    assert cli.main(["run", "-c", 'algorithm="fedltp" evaluate-with-train=true']) == 2
    assert not launched
    preset = tmp_path / "preset.toml"
    preset.write_text('algorithm = "fedavg"\nnum-rounds = 4\n')
    args = ["run", str(preset), "-c", "num-rounds=2", "--supernodes", "3"]
    assert cli.main(args) == 0
    (given,) = launched
    kwargs = given.pop("_kwargs")
    assert given == {"algorithm": "fedavg", "num-rounds": 2}  # --run-config wins
    assert kwargs["num_supernodes"] == 3 and callable(kwargs["on_line"])


def test_a_failed_launch_is_a_non_zero_exit(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setattr(
        "fedticket.simulations.launcher.launch",
        lambda run_config, **kwargs: LaunchResult(1, "", None, 1.0, "no clients"),
    )
    assert cli.main(["run"]) == 1
    assert "failed: no clients" in capsys.readouterr().err
