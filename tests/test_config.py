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
        ({"partitioner": "dirichlet2"}, "allowed: dirichlet, iid, sampled, shards"),
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
    from fedticket.simulations.check_config import main

    assert main(["--run-config", 'lr=0.1 algoritm="fedavg"']) == 2
    assert "did you mean 'algorithm'" in capsys.readouterr().err
    assert main(["--run-config", "num-rounds=3"]) == 0
    assert "ok: lotteryfl" in capsys.readouterr().out


def test_node_without_partition_id_is_told_how_to_set_it() -> None:
    from fedticket.clients.node import NodeConfigError, partition_of

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


def test_each_algorithm_reads_its_own_section_and_the_keys_stay_flat() -> None:
    from fedticket.algorithms.fedltn import FedLTNSettings
    from fedticket.algorithms.flash import FlashSettings
    from fedticket.algorithms.lotteryfl import LotteryFLSettings

    config = RunConfig.from_run_config({"density": 0.2, "prune-rate": 0.3, "server-lr": 0.5})
    assert FlashSettings.of(config).density == 0.2
    assert LotteryFLSettings.of(config).prune_rate == 0.3
    assert FedLTNSettings.of(config).server_lr == 0.5
    assert config.value("density") == 0.2 and config.value("lr") == config.lr
    flat = config.to_dict()
    assert flat["density"] == 0.2 and flat["prune-rate"] == 0.3 and "sections" not in flat
    # a section's bounds are checked like a shared key's, naming the key
    with pytest.raises(ConfigError, match="'density': must be > 0"):
        RunConfig.from_run_config({"density": 0})


def test_a_section_registered_twice_or_redeclaring_a_key_is_refused() -> None:
    from dataclasses import dataclass

    from fedticket.config import Section, register_section, setting
    from fedticket.config.run_config import key_owners
    from fedticket.registry import SECTIONS

    with pytest.raises(ValueError, match="registered twice"):

        @register_section("flash")
        @dataclass(frozen=True)
        class AnotherFlash(Section):
            spare: int = setting(0, "unused")

    @register_section("test-redeclares-lr")
    @dataclass(frozen=True)
    class Redeclares(Section):
        lr: float = setting(0.1, "a second lr")

    try:
        with pytest.raises(TypeError, match="'lr' is declared by both RunConfig and Redeclares"):
            key_owners()
    finally:
        SECTIONS._entries.pop("test-redeclares-lr")
    assert "lr" in key_owners()


def test_partitions_are_cached_on_the_keys_that_shape_the_data() -> None:
    from fedticket.learn.data.keys import _data_key

    base = RunConfig.from_run_config({})
    other_lr = RunConfig.from_run_config({"lr": 0.05, "density": 0.3})
    other_seed = RunConfig.from_run_config({"seed": 7})
    assert _data_key(base) == _data_key(other_lr) and hash(_data_key(base)) == hash(
        _data_key(other_lr)
    )
    assert _data_key(base) != _data_key(other_seed)
