from __future__ import annotations

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
    with pytest.raises(ConfigError, match="empty value"):
        parse_run_config_string("lr=")


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
    from clients.base import NodeConfigError, partition_of

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
