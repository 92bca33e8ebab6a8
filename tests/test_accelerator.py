"""The ``device`` key: how auto / cpu / cuda / cuda:N resolve, the one-line stop when CUDA is
missing (through the real handshake), and CPU runs repeating bit for bit."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from flwr.app import Context, RecordDict

from fedticket.config import ConfigError, RunConfig
from fedticket.learn.torch_device import DeviceError, resolve_device, seeded
from fedticket.simulations.server_app import run_federation
from fedticket.strategies.base import NoClientsError
from fedticket.strategies.reporting import WALL_CLOCK_COLUMNS
from tests.loopback import LoopbackGrid, three_client_config


def _no_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _one_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_cpu_and_auto_resolve_to_the_cpu_without_cuda(monkeypatch) -> None:
    _no_cuda(monkeypatch)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_takes_cuda_when_torch_sees_it(monkeypatch) -> None:
    _one_gpu(monkeypatch)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")  # explicit cpu stays cpu


def test_missing_cuda_is_one_line_naming_the_fix(monkeypatch) -> None:
    _no_cuda(monkeypatch)
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError) as raised:
            resolve_device(spec)
        message = str(raised.value)
        assert "\n" not in message
        assert f'device="{spec}" needs CUDA' in message
        assert 'device="cpu"' in message


def test_a_gpu_index_past_the_last_one_names_the_ones_there(monkeypatch) -> None:
    _one_gpu(monkeypatch)
    with pytest.raises(DeviceError, match=r"1 CUDA device\(s\), cuda:0..cuda:0"):
        resolve_device("cuda:1")


def test_config_checks_the_device_spelling() -> None:
    assert RunConfig.from_run_config({}).device == "auto"
    assert RunConfig.from_run_config({"device": "cuda:3"}).device == "cuda:3"  # checked later
    for bad in ("gpu", "cuda:", "cuda:x", "CPU"):
        with pytest.raises(ConfigError, match="run-config key 'device'"):
            RunConfig.from_run_config({"device": bad})


def test_seeded_draws_repeat_and_leave_the_global_generator_alone() -> None:
    before = torch.random.get_rng_state()
    with seeded(7, torch.device("cpu")):
        a = torch.rand(4)
    with seeded(7, torch.device("cpu")):
        b = torch.rand(4)
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.usefixtures("flower_task_identity")
def test_cuda_on_a_machine_without_it_stops_at_the_handshake(tmp_path, monkeypatch) -> None:
    _no_cuda(monkeypatch)
    run_config = three_client_config(tmp_path, device="cuda")
    grid = LoopbackGrid(3, run_config)
    with pytest.raises(NoClientsError, match=r'^node \d+: device="cuda" needs CUDA') as raised:
        run_federation(grid, RunConfig.from_run_config(run_config))
    assert "\n" not in str(raised.value)
    assert [m.metadata.message_type for m in grid.delivered] == ["query"] * 3  # no training


@pytest.mark.usefixtures("flower_task_identity")
def test_cpu_and_auto_give_the_same_run_twice_on_a_cpu_machine(tmp_path, monkeypatch) -> None:
    _no_cuda(monkeypatch)
    tables = []
    for name, device in (("a", "cpu"), ("b", "cpu"), ("c", "auto")):
        run_config = three_client_config(tmp_path / name, device=device)
        strategy = run_federation(
            LoopbackGrid(3, run_config), RunConfig.from_run_config(run_config)
        )
        frames = {}
        for table in ("rounds", "clients", "masks"):
            frame = pd.read_parquet(strategy.run_dir.path / f"{table}.parquet")
            frames[table] = frame.drop(columns=[c for c in frame if c in WALL_CLOCK_COLUMNS])
        tables.append(frames)
    for other in tables[1:]:
        for table, frame in tables[0].items():
            pd.testing.assert_frame_equal(frame, other[table], check_exact=True, obj=table)


@pytest.mark.usefixtures("flower_task_identity")
def test_a_late_node_without_the_device_is_left_out_not_the_run(tmp_path, monkeypatch) -> None:
    from fedticket.clients import handlers

    broken = {"now": False}

    def resolve(spec: str) -> torch.device:
        if broken["now"]:
            raise DeviceError(f'device="{spec}" needs CUDA, but (test) none here')
        return torch.device("cpu")

    monkeypatch.setattr(handlers, "resolve_device", resolve)
    run_config = three_client_config(
        tmp_path, device="cuda", **{"num-rounds": 3, "min-train-clients": 2}
    )
    grid = LoopbackGrid(3, run_config)

    def replace_node_1(context: Context) -> None:  # node 1001 leaves, 2001 joins without CUDA
        old = grid.contexts.pop(1001)
        grid.contexts[2001] = Context(
            run_id=1, node_id=2001, node_config=old.node_config, state=RecordDict(),
            run_config=old.run_config,
        )  # fmt: skip
        broken["now"] = True

    def repaired(context: Context) -> None:
        broken["now"] = False

    grid.before[(1, 2, "evaluate")] = replace_node_1  # after round 1
    grid.before[(2, 0, "train")] = repaired  # the handshake of 2001 came first
    strategy = run_federation(grid, RunConfig.from_run_config(run_config))
    assert 'node 2001: device="cuda" needs CUDA' in strategy.rejected[2001]
    rounds = pd.read_parquet(strategy.run_dir.path / "rounds.parquet")
    assert list(rounds["train_clients"]) == [3, 2, 2]


def test_a_client_that_ray_gave_no_gpu_is_told_to_ask_for_a_share(monkeypatch) -> None:
    _no_cuda(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(DeviceError, match="client-resources-num-gpus"):
        resolve_device("cuda")
