"""The analysis figures read right (issue #25): bytes in KB / MB, whole rounds on round axes,
runs named by their labels, accuracy panels on one 0-1 scale with a band for the spread over
clients, points instead of a box plot for a handful of clients, one scale for side-by-side
byte panels, and a caption line with the setup under every figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection

from fedticket.analysis import plots
from fedticket.analysis.labels import run_labels, setup_caption

CONFIG = {
    "algorithm": "lotteryfl",
    "dataset": "mnist-offline",
    "partitioner": "dirichlet",
    "dirichlet-alpha": 0.1,
    "local-epochs": 2,
    "seed": 1,
}


def _run(clients: int, scale: float = 1.0, seed: int = 1) -> dict:
    rounds = pd.DataFrame(
        {
            "round": [1, 2, 3],
            "message_bytes_down": np.array([400_000, 300_000, 200_000]) * scale,
            "message_bytes_up": np.array([200_000, 150_000, 100_000]) * scale,
            "mean_density": [0.8, 0.64, 0.51],
        }
    )
    for protocol in ("served", "local", "global", "reference"):
        rounds[f"{protocol}_accuracy"] = [0.4, 0.6, 0.7]
        rounds[f"{protocol}_accuracy_std"] = [0.1, 0.05, 0.02]
    frame = pd.DataFrame(
        {
            "round": [3] * clients,
            "phase": ["evaluate"] * clients,
            "status": ["ok"] * clients,
            "partition_id": list(range(clients)),
            "device_class": ["simulated"] * clients,
            "density_level": [1.0] * clients,
            "served_accuracy": np.linspace(0.5, 0.9, clients),
        }
    )
    comm = pd.DataFrame(
        {
            "partition_id": np.repeat(np.arange(clients), 2),
            "direction": ["down", "up"] * clients,
            "message_bytes": np.tile([300_000 * scale, 150_000 * scale], clients),
        }
    )
    config = CONFIG | {"seed": seed}
    return {"config": config, "rounds": rounds, "clients": frame, "comm": comm}


@pytest.fixture
def runs() -> dict:
    return {"lotteryfl seed=1": _run(3), "lotteryfl seed=2": _run(3, scale=4, seed=2)}


def _caption(fig) -> str:
    (text,) = [t.get_text() for t in fig.texts]
    return text.replace("\n", " ")  # wrapped to the figure's width


def test_every_figure_has_the_setup_caption(runs) -> None:
    for name in plots.FIGURES:
        fig = plots.build(name, runs)
        if fig is None:  # no masks, one device class: the figure does not apply
            continue
        caption = _caption(fig)
        assert caption.startswith("2 runs | data mnist-offline | partition dirichlet alpha 0.1")
        assert "clients 3" in caption and "rounds 3" in caption and "local epochs 2" in caption


def test_byte_axes_have_units_and_side_by_side_panels_one_scale(runs) -> None:
    ax = plots.build("accuracy_vs_bytes", runs).axes[0]
    assert ax.get_xlabel() == "cumulative Flower message MB (down + up)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(runs)
    first, second = plots.build("bytes_per_client", runs).axes[:2]
    assert first.get_ylabel() == "Flower message MB"
    assert first.get_shared_y_axes().joined(first, second)
    assert [b.get_height() for b in first.patches[:1]] == [pytest.approx(0.3)]  # 300 KB
    assert plots.byte_unit(999.0) == ("B", 1.0) and plots.byte_unit(1.5e9) == ("GB", 1e9)


def test_round_axes_tick_whole_rounds(runs) -> None:
    for name in ("accuracy_vs_round", "density"):
        for ax in plots.build(name, runs).axes:
            ticks = ax.get_xticks()
            assert len(ticks) and np.allclose(ticks, np.round(ticks)), (name, ticks)


def test_protocol_panels_share_a_0_1_scale_with_a_spread_band(runs) -> None:
    axes = plots.build("accuracy_vs_round", runs).axes
    assert len(axes) == 4
    assert all(ax.get_ylim() == (0.0, 1.0) for ax in axes)
    for ax in axes:
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == len(runs)  # mean +- std over clients, one per run


def test_a_handful_of_clients_are_points_and_many_a_box(runs) -> None:
    few = plots.build("client_accuracy", runs).axes[0]
    assert not few.lines  # no box-plot whiskers, caps or medians for 3 clients
    assert sum(isinstance(c, PathCollection) for c in few.collections) == 2 * len(runs)
    many = plots.build("client_accuracy", {"ten clients": _run(10)}).axes[0]
    assert many.lines  # a box plot


def test_labels_name_what_sets_runs_apart_and_the_caption_what_differs() -> None:
    loaded = [_run(3, seed=1), _run(3, seed=2), _run(3)]
    loaded[2]["config"] = CONFIG | {"algorithm": "fedavg"}
    assert run_labels(loaded, ["a", "b", "c"]) == [
        "lotteryfl seed=1",
        "lotteryfl seed=2",
        "fedavg",
    ]
    twins = [_run(3), _run(3)]
    assert run_labels(twins, ["abc123", "def456"]) == [
        "lotteryfl (abc123)",
        "lotteryfl (def456)",
    ]
    short = _run(3)
    short["rounds"] = short["rounds"].iloc[:2]
    caption = setup_caption({"a": _run(3), "b": short})
    assert "rounds 3 / 2 (differ)" in caption
