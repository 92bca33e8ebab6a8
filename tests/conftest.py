"""Shared fixtures. Tests that need ../shared skip cleanly where it is absent (a user's clone)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


@pytest.fixture
def shared_mnist_dir() -> Path:
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"official MNIST test set not present at {SHARED_MNIST}")
    return SHARED_MNIST


@pytest.fixture
def flower_task_identity() -> None:
    """``flwr.app.Message`` outside a running app needs a task identity (FLOWER-NOTES 1)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1


@pytest.fixture(autouse=True)
def client_state_home(tmp_path_factory, monkeypatch) -> Path:
    """Clients keep disk state under their own default root (``clients.state_location``):
    each test gets its own, so no test reads another's snapshots or writes into ``$HOME``."""
    root = tmp_path_factory.mktemp("client-state")
    monkeypatch.setenv("FEDTICKET_STATE_HOME", str(root))
    return root
