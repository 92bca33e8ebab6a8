"""A deployed ClientApp's path (issue #24): each message runs in a new process, so a device
caches its own data on disk (validated on every read), the client path imports neither
pandas nor flwr-datasets, and a deployed ServerApp pulls replies every 0.1 s, not every 3 s."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Message, RecordDict
from flwr.superlink.grid.http_grid import HttpGrid

from fedticket.clients.node import NodeConfigError, data_cache_of
from fedticket.config import RunConfig
from fedticket.learn.data import cache as data_cache
from fedticket.learn.data import client_data
from fedticket.learn.data.cache import cache_key, cached_client_data, read_cache, write_cache
from fedticket.simulations.server_app import run_federation
from fedticket.strategies import deployed_pull
from tests.loopback import LoopbackGrid, three_client_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = RunConfig.from_run_config({"partitioner": "iid"})


def _same(a, b) -> bool:
    names = ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val")
    return a.partition_id == b.partition_id and all(
        np.array_equal(getattr(a, n), getattr(b, n)) for n in names
    )


def test_the_second_read_comes_from_the_cache_file(tmp_path, monkeypatch) -> None:
    first = cached_client_data(tmp_path, CONFIG, 2, 5)
    assert _same(first, client_data(CONFIG, 2, 5))
    assert len(list(tmp_path.glob("client-2-of-5-*.npz"))) == 1

    def no_rebuild(*args):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(data_cache, "client_data", no_rebuild)
    assert _same(cached_client_data(tmp_path, CONFIG, 2, 5), first)
    assert list(tmp_path.glob("*.tmp")) == []  # written atomically, nothing left over


def test_the_key_changes_with_the_data_keys_and_the_client_only() -> None:
    key = cache_key(CONFIG, 2, 5)
    assert key == cache_key(RunConfig.from_run_config({"partitioner": "iid", "lr": 0.5}), 2, 5)
    assert key != cache_key(RunConfig.from_run_config({"partitioner": "iid", "seed": 1}), 2, 5)
    assert key != cache_key(CONFIG, 3, 5) != cache_key(CONFIG, 2, 6)


def _damage(path: Path, how: str) -> None:
    data = client_data(CONFIG, 2, 5)
    key = cache_key(CONFIG, 2, 5)
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif how == "not a zip":
        path.write_bytes(b"\x00" * 1000)
    elif how == "another config":
        write_cache(path, cache_key(CONFIG, 3, 5), data)
    elif how in ("nan pixel", "label 10", "float64 labels", "missing split"):
        arrays = {n: getattr(data, n) for n in ("x_train", "y_train", "x_test", "y_test")}
        arrays |= {"x_val": data.x_val, "y_val": data.y_val}
        if how == "nan pixel":
            arrays["x_train"] = arrays["x_train"].copy()
            arrays["x_train"][0, 0, 0, 0] = np.nan
        elif how == "label 10":
            arrays["y_test"] = arrays["y_test"].copy()
            arrays["y_test"][0] = 10
        elif how == "float64 labels":
            arrays["y_train"] = arrays["y_train"].astype(np.float64)
        else:
            del arrays["x_val"]
        np.savez(path, key=np.frombuffer(key.encode(), np.uint8), **arrays)
    elif how == "zip bomb":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in ("key", "x_train", "y_train", "x_test", "y_test", "x_val", "y_val"):
                archive.writestr(f"{name}.npy", b"\x00" * (1 << 24))
    else:
        raise ValueError(how)


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "not a zip",
        "another config",
        "nan pixel",
        "label 10",
        "float64 labels",
        "missing split",
        "zip bomb",
    ],
)
def test_a_damaged_cache_file_is_refused_and_rebuilt(tmp_path, how, caplog) -> None:
    cached_client_data(tmp_path, CONFIG, 2, 5)
    (path,) = tmp_path.glob("client-2-of-5-*.npz")
    _damage(path, how)
    with pytest.raises(data_cache.CacheFileError):
        read_cache(path, cache_key(CONFIG, 2, 5), CONFIG, 2)
    with caplog.at_level("WARNING", logger="flwr"):
        rebuilt = cached_client_data(tmp_path, CONFIG, 2, 5)
    assert _same(rebuilt, client_data(CONFIG, 2, 5))
    assert "unusable" in caplog.text
    read_cache(path, cache_key(CONFIG, 2, 5), CONFIG, 2)  # the rebuilt file is sound


def test_an_unwritable_cache_is_logged_and_the_data_still_served(tmp_path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level("WARNING", logger="flwr"):
        data = cached_client_data(blocker / "cache", CONFIG, 1, 5)
    assert _same(data, client_data(CONFIG, 1, 5))
    assert "cannot write the data cache" in caplog.text


@pytest.mark.parametrize("value", [3, "", "a\nb", "x" * 5000])
def test_a_bad_data_cache_node_config_is_refused(value) -> None:
    with pytest.raises(NodeConfigError, match="data-cache"):
        data_cache_of({"data-cache": value})
    assert data_cache_of({}) is None


@pytest.mark.usefixtures("flower_task_identity")
def test_a_run_with_cached_node_data_writes_one_file_per_node_and_trains(tmp_path) -> None:
    """Three loopback nodes with data-cache: each node's file holds exactly its client_data
    (the unit tests above show a later message reads it back), and the round trains."""
    run_config = three_client_config(tmp_path / "run", **{"num-rounds": 1})
    node_configs = {pid: {"data-cache": str(tmp_path / f"cache-{pid}")} for pid in range(3)}
    strategy = run_federation(
        LoopbackGrid(3, run_config, node_configs), RunConfig.from_run_config(run_config)
    )
    rounds = pd.read_parquet(strategy.run_dir.path / "rounds.parquet")
    assert rounds["train_clients"].tolist() == [3] and rounds["train_failures"].tolist() == [0]
    config = RunConfig.from_run_config(run_config)
    for pid in range(3):
        (path,) = (tmp_path / f"cache-{pid}").glob("*.npz")
        stored = read_cache(path, cache_key(config, pid, 3), config, pid)
        assert _same(stored, client_data(config, pid, 3))


def test_the_client_path_imports_neither_pandas_nor_flwr_datasets(tmp_path) -> None:
    """What every deployed message's process pays for: the ClientApp module and a cached
    client's data. pandas (0.2 s) and flwr-datasets (1.6 s, seaborn and matplotlib) stay out."""
    cached_client_data(tmp_path, CONFIG, 0, 5)
    script = (
        "import sys\n"
        "import fedticket.simulations.client_app\n"
        "from fedticket.config import RunConfig\n"
        "from fedticket.learn.data.cache import cached_client_data\n"
        f"cached_client_data({str(tmp_path)!r}, RunConfig.from_run_config("
        "{'partitioner': 'iid'}), 0, 5)\n"
        "print(sorted(m for m in ('pandas', 'flwr_datasets', 'datasets', 'seaborn', "
        "'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


class _FakeDeployedGrid(HttpGrid):
    """A deployed grid whose replies arrive ``delay`` seconds after the push."""

    def __init__(self, delay: float) -> None:  # no SuperLink: push and pull are faked
        self.delay, self.pulls, self.pushed_at = delay, 0, 0.0
        self.sent: list[Message] = []

    def push_messages(self, messages):
        self.sent = list(messages)
        self.pushed_at = time.monotonic()
        return [f"id-{i}" for i in range(len(self.sent))]

    def pull_messages(self, message_ids):
        self.pulls += 1
        if time.monotonic() - self.pushed_at < self.delay:
            return []
        replies = []
        for message_id in sorted(message_ids):
            reply = Message(RecordDict(), dst_node_id=1, message_type="query")
            reply.metadata.__dict__["_reply_to_message_id"] = message_id
            replies.append(reply)
        return replies


@pytest.mark.usefixtures("flower_task_identity")
def test_a_deployed_grid_is_pulled_every_tenth_of_a_second() -> None:
    grid = _FakeDeployedGrid(delay=0.35)
    messages = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in (1, 2)]
    started = time.monotonic()
    replies = deployed_pull.send_and_receive(grid, messages, timeout=30)
    waited = time.monotonic() - started
    assert len(replies) == 2 and {r.metadata.reply_to_message_id for r in replies} == {
        "id-0",
        "id-1",
    }
    assert 0.35 <= waited < 1.0  # Flower's own loop would wait 3 s
    assert 4 <= grid.pulls <= 8


@pytest.mark.usefixtures("flower_task_identity")
def test_a_deployed_grid_gives_up_at_the_timeout() -> None:
    grid = _FakeDeployedGrid(delay=60)
    started = time.monotonic()
    replies = deployed_pull.send_and_receive(
        grid, [Message(RecordDict(), dst_node_id=1, message_type="query")], timeout=0.3
    )
    assert replies == [] and 0.3 <= time.monotonic() - started < 1.0
