"""Reliability on the real strategy and client code (in-process loopback grid): checkpoints and
exact resume, resume=false, damaged or foreign checkpoints, failing clients, too few replies,
determinism. The kill -9 test on the simulation engine is in test_resume_kill.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import Error, Message

from fedticket.clients.state_location import default_state_root
from fedticket.config import RunConfig
from fedticket.simulations.server_app import run_federation
from fedticket.store.checkpoints import CheckpointError
from fedticket.strategies.base import NoClientsError
from fedticket.strategies.reporting import WALL_CLOCK_COLUMNS
from tests.loopback import LoopbackGrid

pytestmark = pytest.mark.usefixtures("flower_task_identity")


class Crash(RuntimeError):
    pass


def _config(root, **overrides) -> dict:
    return {
        "algorithm": "fedltn",
        "model": "mnist-cnn-bn",
        "num-rounds": 4,
        "partitioner": "iid",
        "acc-threshold": -1.0,
        "min-train-clients": 3,
        "min-evaluate-clients": 3,
        "min-available-clients": 3,
        "client-state": "disk",
        "output-root": str(root),
    } | overrides


def _run(run_config: dict, grid: LoopbackGrid | None = None):
    grid = grid or LoopbackGrid(3, run_config)
    return run_federation(grid, RunConfig.from_run_config(run_config))


def _tables(run_dir) -> dict[str, pd.DataFrame]:
    tables = {}
    for name in ("rounds", "clients", "comm", "masks"):
        frame = pd.read_parquet(run_dir / f"{name}.parquet")
        tables[name] = frame.drop(columns=[c for c in frame if c in WALL_CLOCK_COLUMNS])
    return tables


def _assert_same(a, b) -> None:
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


# CELL: broadcasts, tickets kept apart from the codec's mask, stragglers (threshold 0.12)
CELL = {"algorithm": "cell", "model": "mnist-cnn", "cell-threshold": 0.12}
# Fed-LTP: server-side ticket and sub-model deal, privacy counters, the validated model
FEDLTP = {
    "algorithm": "fedltp",
    "model": "mnist-cnn",
    "fedltp-local-steps": 3,
    "fedltp-tickets": 1,
    "fedltp-ticket-epochs": 1,
    "fedltp-submodels": 2,
    "fedltp-noise-source": "seeded",
}


# Itahara: the server's pre-trained ticket, kept in the checkpoint
ITAHARA = {"algorithm": "itahara", "model": "mnist-cnn", "itahara-epochs": 1}


@pytest.mark.parametrize(
    "algorithm", [{}, CELL, FEDLTP, ITAHARA], ids=["fedltn", "cell", "fedltp", "itahara"]
)
def test_a_crashed_run_resumes_from_its_checkpoint_and_ends_identical(tmp_path, algorithm) -> None:
    reference = _run(_config(tmp_path / "a", **algorithm)).run_dir.path
    config = _config(tmp_path / "b", **algorithm)
    crashing = LoopbackGrid(3, config)

    def crash(context) -> None:
        raise Crash("power cut")

    crashing.before[(3, 1, "train")] = crash  # mid-round 3, after a client of round 3 trained
    with pytest.raises(Crash):
        _run(config, crashing)
    run_dir = (tmp_path / "b" / config["algorithm"] / "latest").resolve()
    assert np.load(run_dir / "checkpoint.npz")["__meta__"] is not None
    assert pd.read_parquet(run_dir / "rounds.parquet")["round"].tolist() == [1, 2]
    resumed = _run(config)  # a new grid: every client lost its memory, as after a restart
    assert resumed.run_dir.path == run_dir
    _assert_same(_tables(reference), _tables(run_dir))
    # snapshots kept: the newest at or before the last checkpoint the client heard of, and later
    key = (run_dir / "client-state-key").read_text()
    snapshots = sorted(p.name for p in (default_state_root() / key / "0").iterdir())
    assert snapshots == ["r000003.npz", "r000004.npz"]


def test_resume_false_starts_fresh_in_a_new_directory(tmp_path) -> None:
    # client-state in memory: with "disk", each message names its run directory's state folder
    config = _config(tmp_path, **{"num-rounds": 1, "client-state": "memory"})
    first = _run(config).run_dir.path
    second = _run(config | {"resume": False}).run_dir.path
    assert second == first.with_name(first.name + "-2")
    _assert_same(_tables(first), _tables(second))  # and the same seed gives the same tables


def test_a_finished_run_is_not_repeated(tmp_path) -> None:
    config = _config(tmp_path, **{"num-rounds": 2})
    _run(config)
    grid = LoopbackGrid(3, config)
    again = _run(config, grid)
    assert len(again.round_rows) == 2
    assert not any(m.metadata.message_type == "train" for m in grid.delivered)


def test_damaged_or_foreign_checkpoints_are_refused_with_the_fix(tmp_path) -> None:
    config = _config(tmp_path, **{"num-rounds": 1})
    run_dir = _run(config).run_dir.path
    checkpoint = run_dir / "checkpoint.npz"
    good = checkpoint.read_bytes()
    checkpoint.write_bytes(good[: len(good) // 2])
    before = {p.name: p.read_bytes() for p in run_dir.glob("*.parquet")}
    with pytest.raises(CheckpointError, match=r"damaged .*resume=false"):
        _run(config)
    assert {p.name: p.read_bytes() for p in run_dir.glob("*.parquet")} == before  # untouched
    other_config = _config(tmp_path, **{"num-rounds": 1, "seed": 7})
    other = _run(other_config).run_dir.path
    (other / "checkpoint.npz").write_bytes(good)
    with pytest.raises(CheckpointError, match="belongs to config"):
        _run(other_config)


def test_a_fifth_of_the_clients_failing_every_round_does_not_stop_the_run(tmp_path) -> None:
    config = _config(
        tmp_path,
        **{"algorithm": "lotteryfl", "model": "mnist-cnn", "num-rounds": 10,
           "min-train-clients": 5, "min-evaluate-clients": 5, "min-available-clients": 5},
    )  # fmt: skip
    grid = LoopbackGrid(5, config)
    rng = np.random.default_rng(0)
    failing = {r: int(rng.integers(5)) for r in range(1, 11)}

    def boom(request: Message, reply: Message) -> Message:
        return Message(
            Error(code=2, reason="RuntimeError: injected: out of memory"), reply_to=request
        )

    for server_round, pid in failing.items():
        grid.faults[(server_round, pid, "train")] = boom
    strategy = _run(config, grid)
    rows = pd.DataFrame(strategy.client_rows)
    train = rows[rows["phase"] == "train"]
    failed = train[train["status"] != "ok"]
    assert dict(zip(failed["round"], failed["partition_id"], strict=True)) == failing
    assert failed["reason"].str.contains("injected: out of memory").all()
    assert [r["train_clients"] for r in strategy.round_rows] == [4] * 10
    assert [r["train_failures"] for r in strategy.round_rows] == [1] * 10


def test_too_few_replies_retry_the_round_then_stop_keeping_finished_rounds(tmp_path) -> None:
    config = _config(
        tmp_path, **{"algorithm": "fedavg", "model": "mlp", "num-rounds": 3, "min-train-replies": 3}
    )
    grid = LoopbackGrid(3, config)

    def lost(request, reply):
        return None  # the reply never arrives

    tries = []

    def lost_once(request, reply):
        tries.append(1)
        return None if len(tries) == 1 else reply

    grid.faults[(2, 0, "train")] = lost_once  # round 2, first try: 2 of 3 replies -> retried
    strategy = _run(config, grid)
    train = pd.DataFrame(strategy.client_rows).query("phase == 'train' and round == 2")
    assert len(train) == 6 and (train["status"] == "timeout").sum() == 1
    assert len(strategy.round_rows) == 3

    stuck = _config(
        tmp_path / "stuck",
        **{"algorithm": "fedavg", "model": "mlp", "num-rounds": 3, "min-train-replies": 3},
    )
    grid = LoopbackGrid(3, stuck)

    class LostEveryTryOfRoundTwo(dict):
        def get(self, key, default=None):
            return lost if key == (2, 1, "train") else default

    grid.faults = LostEveryTryOfRoundTwo()
    with pytest.raises(NoClientsError, match=r"round 2: fewer than min-train-replies=3 .* 2 tries"):
        _run(stuck, grid)
    run_dir = (tmp_path / "stuck" / "fedavg" / "latest").resolve()
    assert pd.read_parquet(run_dir / "rounds.parquet")["round"].tolist() == [1]


def test_same_config_and_seed_give_identical_tables(tmp_path) -> None:
    flash = {
        "algorithm": "flash",
        "model": "mnist-cnn",
        "density": 0.2,
        "init-epochs": 1,
        "num-rounds": 2,
    }
    a = _run(_config(tmp_path / "a", **flash))
    b = _run(_config(tmp_path / "b", **flash))
    _assert_same(_tables(a.run_dir.path), _tables(b.run_dir.path))


def test_a_table_read_while_its_run_rewrites_it_is_always_whole(tmp_path) -> None:
    import threading

    from fedticket.store.results import atomic_write_parquet, read_table

    target = tmp_path / "rounds.parquet"
    atomic_write_parquet(target, pd.DataFrame({"round": [1]}))
    stop = threading.Event()

    def rewrite() -> None:
        n = 1
        while not stop.is_set():
            n += 1
            atomic_write_parquet(target, pd.DataFrame({"round": range(1, n + 1), "x": 0.5}))

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for _ in range(300):
            frame = read_table(target)
            assert list(frame["round"]) == list(range(1, len(frame) + 1))
    finally:
        stop.set()
        writer.join()
