from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from fedticket.config import ConfigError, RunConfig, parse_run_config_string, valid_keys

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_empty_run_config_gives_defaults() -> None:
    config = RunConfig.from_run_config({})
    assert config == RunConfig()
    assert config.algorithm == "lotteryfl" and config.dataset == "mnist-offline"


def test_pyproject_declares_every_key_with_the_dataclass_default() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert sorted(declared) == sorted(valid_keys())
    assert RunConfig.from_run_config(declared) == RunConfig()


def test_toml_int_is_coerced_to_float_and_integral_float_to_int() -> None:
    config = RunConfig.from_run_config({"lr": 1, "num-rounds": 3.0})
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.num_rounds == 3 and isinstance(config.num_rounds, int)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"algoritm": "fedavg"}, "did you mean 'algorithm'"),
        ({"lr": -1}, "'lr': must be > 0"),
        ({"num-rounds": 2.5}, "'num-rounds': expected int"),
        ({"download": "yes"}, "expected true or false"),
        ({"dataset": "mnsit-offline"}, "did you mean 'mnist-offline'"),
        ({"partitioner": "dirichlet2"}, "allowed: dirichlet, iid, shards"),
        ({"model": "lenet5"}, "models that do: mlp, mnist-cnn, mnist-cnn-bn, vgg-bn"),
        ({"dataset": "mnist-idx"}, "'data-dir'"),
        ({"test-fraction": 0.95}, "must be <= 0.9"),
        ({"fraction-train": True}, "expected float"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(raw: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_run_config(raw)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


def test_unknown_algorithm_is_rejected_against_the_registry() -> None:
    with pytest.raises(ConfigError, match="did you mean 'fedavg'"):
        RunConfig.from_run_config({"algorithm": "fedavgg"}, algorithms=["fedavg"])


def test_hash_is_stable_and_ignores_output_root() -> None:
    a = RunConfig.from_run_config({"lr": 0.1})
    b = RunConfig.from_run_config({"lr": 0.1, "output-root": "/somewhere/else"})
    c = RunConfig.from_run_config({"lr": 0.2})
    assert a.config_hash() == b.config_hash() != c.config_hash()
    assert len(a.config_hash()) == 12
    assert a.to_dict()["num-rounds"] == 20


def test_parse_run_config_string_matches_flower_toml_rules() -> None:
    parsed = parse_run_config_string('lr=1 dataset="mnist-idx" download=true')
    assert parsed == {"lr": 1, "dataset": "mnist-idx", "download": True}
    with pytest.raises(ConfigError, match="quote strings"):
        parse_run_config_string("dataset=mnist")
    assert parse_run_config_string("lr=") == {}  # as flwr run: dropped (check_config warns)


def test_readme_documents_every_key_with_its_default() -> None:
    import json

    from fedticket.config import describe_keys

    readme = (PYPROJECT.parent / "README.md").read_text()
    for key, default, help_text in describe_keys():
        assert f"| `{key}` | `{json.dumps(default)}` | {help_text} |" in readme, key


def test_check_config_cli_names_the_unknown_key(capsys: pytest.CaptureFixture[str]) -> None:
    from simulations.check_config import main

    assert main(["--run-config", 'lr=0.1 algoritm="fedavg"']) == 2
    assert "did you mean 'algorithm'" in capsys.readouterr().err
    assert main(["--run-config", "num-rounds=3"]) == 0
    assert "ok: lotteryfl" in capsys.readouterr().out


def test_node_without_partition_id_is_told_how_to_set_it() -> None:
    from clients.node import NodeConfigError, partition_of

    assert partition_of({"partition-id": 1, "num-partitions": 3}) == (1, 3)
    with pytest.raises(NodeConfigError, match='--node-config "partition-id=K num-partitions=N"'):
        partition_of({})
    with pytest.raises(NodeConfigError, match="invalid"):
        partition_of({"partition-id": 3, "num-partitions": 3})


def test_presets_are_valid_and_fedavg_differs_from_lotteryfl_only_in_algorithm() -> None:
    presets = PYPROJECT.parent / "simulations" / "presets"
    lottery = tomllib.loads((presets / "lotteryfl-mnist.toml").read_text())
    fedavg = tomllib.loads((presets / "fedavg-mnist.toml").read_text())
    assert RunConfig.from_run_config(lottery).algorithm == "lotteryfl"
    assert RunConfig.from_run_config(fedavg).algorithm == "fedavg"
    assert {k: v for k, v in lottery.items() if k != "algorithm"} == {
        k: v for k, v in fedavg.items() if k != "algorithm"
    }


# ---------------------------------------------------------------- issue #19: no value poisons a run
@pytest.mark.parametrize("value", [math.nan, -math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    "key",
    [
        "lr",
        "lr-end",
        "weight-decay",
        "server-lr",
        "dirichlet-alpha",
        "link-latency-ms",
        "momentum",
        "round-timeout",
        "acc-threshold",
        "link-up-mbps",
    ],
)
def test_non_finite_floats_are_rejected_naming_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'") as err:
        RunConfig.from_run_config({key: value})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["lr=nan", "lr=+nan", "lr=-nan", "lr=inf", "lr=-inf"])
def test_non_finite_floats_from_toml_are_rejected(text: str) -> None:
    with pytest.raises(ConfigError, match="'lr': must be a finite number"):
        RunConfig.from_run_config(parse_run_config_string(text))


def test_negative_zero_is_stored_as_zero() -> None:
    config = RunConfig.from_run_config({"lr-end": -0.0, "weight-decay": -0.0})
    assert math.copysign(1.0, config.lr_end) == 1.0
    assert config.config_hash() == RunConfig().config_hash()


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**400, 1e300])
@pytest.mark.parametrize("key", ["num-rounds", "seed", "client-threads", "batch-size", "lr"])
def test_ints_beyond_int64_are_rejected(key: str, value: int | float) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        RunConfig.from_run_config({key: value})


@pytest.mark.parametrize(
    ("key", "largest"),
    [
        ("seed", 2**32 - 1),
        ("num-rounds", 1_000_000),
        ("batch-size", 100_000_000),
        ("eval-batch-size", 100_000_000),
        ("local-epochs", 10_000),
        ("client-threads", 1024),
        ("min-available-clients", 1_000_000),
        ("round-retries", 100),
        ("round-timeout", 43_200.0),
        ("link-latency-ms", 60_000.0),
        ("link-up-mbps", 1e6),
    ],
)
def test_counts_and_sizes_have_an_upper_bound(key: str, largest: int | float) -> None:
    config = RunConfig.from_run_config({key: largest})
    assert config.to_dict()[key] == largest
    with pytest.raises(ConfigError, match=f"'{key}': must be <= "):
        RunConfig.from_run_config({key: largest * 2})


def test_link_speed_is_off_or_at_least_one_kbit() -> None:
    assert RunConfig.from_run_config({"link-up-mbps": 0}).link_up_mbps == 0.0
    assert RunConfig.from_run_config({"link-down-mbps": 0.001}).link_down_mbps == 0.001
    with pytest.raises(ConfigError, match=r"'link-up-mbps': must be 0 \(off\) or >= 0\.001"):
        RunConfig.from_run_config({"link-up-mbps": 1e-300})


@pytest.mark.parametrize("char", ["\x00", "\n", "\t", "\x1b", "\x7f", "\x85", "\x9f"])
@pytest.mark.parametrize("key", ["output-root", "data-dir", "device", "algorithm", "dataset"])
def test_control_characters_in_strings_are_rejected(key: str, char: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}': contains control character") as err:
        RunConfig.from_run_config({key: f"ab{char}c"})
    assert "\n" not in str(err.value)


def test_surrogates_and_unusable_paths_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"'output-root': .*not valid Unicode"):
        RunConfig.from_run_config({"output-root": "runs\ud800"})
    with pytest.raises(ConfigError, match=r"'output-root': .*255 bytes"):
        RunConfig.from_run_config({"output-root": "/tmp/" + "x" * 256})
    with pytest.raises(ConfigError, match=r"'data-dir': .*4096 bytes"):
        RunConfig.from_run_config({"data-dir": "/x" * 2048})
    path = "/tmp/ünïcode 😀 a b/runs"
    assert RunConfig.from_run_config({"output-root": path}).output_root == path


@pytest.mark.parametrize("device", ["cuda:128", "cuda:01", "cuda:٣", "cuda:99999999999999999999"])
def test_device_index_must_be_one_torch_can_hold(device: str) -> None:
    with pytest.raises(ConfigError, match="'device'"):
        RunConfig.from_run_config({"device": device})
    assert RunConfig.from_run_config({"device": "cuda:127"}).device == "cuda:127"


def test_non_string_keys_and_odd_key_text_give_one_line() -> None:
    with pytest.raises(ConfigError, match="keys are strings"):
        RunConfig.from_run_config({1: 2})
    with pytest.raises(ConfigError) as err:
        RunConfig.from_run_config({"l\nr": 1})
    assert "\n" not in str(err.value)


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
    from simulations.check_config import main

    assert main(args) == 2
    *warnings, last = capsys.readouterr().err.strip().splitlines()
    assert last.startswith("invalid: ") and fragment in last, last
    assert all(line.startswith("warning: ") for line in warnings), warnings


def test_check_config_warns_about_what_flower_ignores(capsys: pytest.CaptureFixture[str]) -> None:
    from simulations.check_config import main

    assert main(["--run-config", "num-rounds=3 lr = 0.1"]) == 0
    captured = capsys.readouterr()
    assert "warning: flwr run ignores 'lr = 0.1'" in captured.err
    assert "ok: lotteryfl" in captured.out
    assert main(["--run-config", "num-rounds=3", "--run-config", "lr=0.5"]) == 0


def test_check_config_reads_a_preset_as_flower_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulations.check_config import main

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
    from simulations.launcher import toml_value

    assert _flower_reads(f"k={toml_value(value)}") == {"k": value}


def test_toml_value_reads_back_non_finite_floats() -> None:
    from simulations.launcher import toml_value

    assert math.isnan(_flower_reads(f"k={toml_value(math.nan)}")["k"])
    assert _flower_reads(f"k={toml_value(-math.inf)}") == {"k": -math.inf}


@pytest.mark.parametrize("value", ["both ' and \"", 'quote " and a newline\n', 2**63])
def test_toml_value_refuses_what_flower_cannot_read_back(value: object) -> None:
    from simulations.launcher import toml_value

    with pytest.raises(ValueError, match="Flower"):
        toml_value(value)


# ---------------------------------------------------------------- edge certificates
def test_private_keys_are_created_owner_only_even_with_umask_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created 0600, not chmod-ed afterwards: with chmod disabled a key must still be 0600."""
    import os
    import stat

    from simulations.edge.certs import make_node_key, make_server_certificates

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

    from simulations.edge.certs import make_node_key

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
