"""Flower's ``--run-config`` syntax as the tools read it (fedticket.config.flower_args), the
check_config CLI, ``toml_value`` and the edge keys' file modes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedticket.config import ConfigError, parse_run_config_string

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_duplicate_key_in_one_string_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'lr' is given twice"):
        parse_run_config_string("lr=0.1 lr=nan")
    with pytest.raises(ConfigError, match="'lr' is given twice"):
        parse_run_config_string('lr=0.1 "lr"=0.2')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('device="cpu "', {"device": "cpu "}),
        ('output-root="a b" lr=0.5', {"output-root": "a b", "lr": 0.5}),
        ("output-root='a \"b\"'", {"output-root": 'a "b"'}),
        ('data-dir="x=y"', {"data-dir": "x=y"}),
        ("lr=", {}),
        ("lr = 0.1", {}),
        ("", {}),
    ],
)
def test_parse_run_config_string_agrees_with_flower(text: str, expected: dict) -> None:
    from flwr.common.config import parse_config_args

    assert parse_run_config_string(text) == expected == parse_config_args([text])


def test_ignored_parts_of_a_run_config_string_are_reported() -> None:
    from fedticket.config import ignored_run_config_text

    assert ignored_run_config_text("lr = 0.1 num-rounds=3") == ["lr = 0.1"]
    assert ignored_run_config_text('lr= output-root="a"b') == ["lr=", "b"]
    assert ignored_run_config_text('lr=0.1 device="cpu "') == []


def test_our_pattern_is_flowers() -> None:
    import inspect

    from flwr.common.config import parse_config_args

    from fedticket.config import FLOWER_PAIR

    assert f'r"{FLOWER_PAIR.pattern}"' in inspect.getsource(parse_config_args)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--run-config", 'device="cpu'], "device"),
        (["--run-config", "output-root='a b"], "output-root"),
        (["--run-config", "lr=0.1 lr=nan"], "'lr' is given twice"),
        (["--run-config", "lr=nan"], "'lr': must be a finite number"),
        (["--run-config", "dataset=mnist"], "quote strings"),
        (["--run-config", "lr=[1,2]"], "'lr'"),
        (["--run-config", "lr=1979-05-27"], "'lr'"),
        (["--run-config", 'output-root="a\x01b"'], "not a valid TOML string"),
        (["--run-config", 'output-root="a\\u0001b"'], "control character U+0001"),
        (["--run-config", "lr=1 x.toml"], "cannot read"),
        (["--run-config", "a.toml", "--run-config", "lr=1"], ".toml file cannot be given"),
        (["--run-config", "/nonexistent/run.toml"], "cannot read"),
        (["/nonexistent/preset.toml"], "cannot read"),
        (["--run-config", 'device="cpu "'], "'device'"),
    ],
)
def test_check_config_never_shows_a_traceback(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedticket.simulations.check_config import main

    assert main(args) == 2
    *warnings, last = capsys.readouterr().err.strip().splitlines()
    assert last.startswith("invalid: ") and fragment in last, last
    assert all(line.startswith("warning: ") for line in warnings), warnings


def test_check_config_warns_about_what_flower_ignores(capsys: pytest.CaptureFixture[str]) -> None:
    from fedticket.simulations.check_config import main

    assert main(["--run-config", "num-rounds=3 lr = 0.1"]) == 0
    captured = capsys.readouterr()
    assert "warning: flwr run ignores 'lr = 0.1'" in captured.err
    assert "ok: lotteryfl" in captured.out
    assert main(["--run-config", "num-rounds=3", "--run-config", "lr=0.5"]) == 0


def test_check_config_reads_a_preset_as_flower_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedticket.simulations.check_config import main

    preset = tmp_path / "p.toml"
    preset.write_text("lr = nan\n")
    assert main([str(preset)]) == 2
    assert "'lr': must be a finite number" in capsys.readouterr().err
    preset.write_text("lr = 0.5\n")
    assert main(["--run-config", str(preset)]) == 0


# ---------------------------------------------------------------- launcher.toml_value
def _flower_reads(text: str) -> dict:
    from flwr.common.config import parse_config_args

    return parse_config_args([text])


@pytest.mark.parametrize(
    "value",
    [
        "/tmp/😀/runs",
        "a b",
        'say "hi"',
        "tab\there",
        "nl\nx",
        "\x00\x1f\x7f\x85",
        "",
        "ü",
        "back\\slash",
        "=",
        "'",
        0,
        -(2**63),
        2**63 - 1,
        1.5,
        -0.0,
        1e300,
        5e-324,
        True,
        False,
    ],
)
def test_toml_value_round_trips_through_flower(value: object) -> None:
    from fedticket.simulations.launcher import toml_value

    assert _flower_reads(f"k={toml_value(value)}") == {"k": value}


def test_toml_value_reads_back_non_finite_floats() -> None:
    from fedticket.simulations.launcher import toml_value

    assert math.isnan(_flower_reads(f"k={toml_value(math.nan)}")["k"])
    assert _flower_reads(f"k={toml_value(-math.inf)}") == {"k": -math.inf}


@pytest.mark.parametrize("value", ["both ' and \"", 'quote " and a newline\n', 2**63])
def test_toml_value_refuses_what_flower_cannot_read_back(value: object) -> None:
    from fedticket.simulations.launcher import toml_value

    with pytest.raises(ValueError, match="Flower"):
        toml_value(value)


# ---------------------------------------------------------------- edge certificates
def test_private_keys_are_created_owner_only_even_with_umask_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created 0600, not chmod-ed afterwards: with chmod disabled a key must still be 0600."""
    import os
    import stat

    from fedticket.simulations.edge.certs import make_node_key, make_server_certificates

    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    monkeypatch.setattr(os, "fchmod", lambda *a, **k: None)
    previous = os.umask(0)
    try:
        private, public = make_node_key(tmp_path, "node0")
        paths = make_server_certificates(tmp_path / "server")
    finally:
        os.umask(previous)
    for key in (private, paths.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert b"OPENSSH PRIVATE KEY" in private.read_bytes()
    assert stat.S_IMODE(public.stat().st_mode) == 0o666  # public: umask 0 leaves it as asked


def test_an_existing_wider_key_file_is_narrowed_before_the_key_is_written(tmp_path: Path) -> None:
    import os
    import stat

    from fedticket.simulations.edge.certs import make_node_key

    existing = tmp_path / "node0"
    existing.write_bytes(b"old")
    existing.chmod(0o666)
    previous = os.umask(0)
    try:
        private, _ = make_node_key(tmp_path, "node0")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"old" not in private.read_bytes()
