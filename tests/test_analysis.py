"""Analysis: the masks table, the figures (from hand-made tables), the run report, the
notebook (executed against runs made in this test session) and the compare command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from fedticket.analysis import plots
from fedticket.analysis.report import main as report_main
from fedticket.config import RunConfig
from fedticket.simulations.server_app import run_federation
from fedticket.store.results import load_run, masks_frame, masks_from_frame
from tests.loopback import LoopbackGrid, three_client_config

NOTEBOOK = Path(__file__).resolve().parents[1] / "simulations" / "notebooks" / "analysis.ipynb"
PRESETS = Path(__file__).resolve().parents[1] / "simulations" / "presets"
LOTTERYFL_RUN = '[[runs]]\nlabel = "LotteryFL"\nalgorithm = "lotteryfl"\nacc-threshold = -1.0\n'
PNG = b"\x89PNG\r\n\x1a\n"


def test_masks_table_round_trips_every_bit() -> None:
    rng = np.random.default_rng(3)
    masks = {
        pid: {"conv.weight": rng.random((4, 3, 5)) < 0.3, "fc.weight": rng.random((7, 9)) < 0.6}
        for pid in (2, 0, 5)
    }
    frame = masks_frame(masks)
    assert frame["kept"].sum() == sum(int(m.sum()) for t in masks.values() for m in t.values())
    back = masks_from_frame(frame)
    assert sorted(back) == [0, 2, 5]
    for pid, tensors in masks.items():
        for name, mask in tensors.items():
            assert back[pid][name].shape == mask.shape and np.array_equal(back[pid][name], mask)


def _hand_made_run(shift: float, masks: bool, levels: tuple[float, ...]) -> dict:
    rounds = pd.DataFrame(
        {
            "round": [1, 2, 3],
            "served_accuracy": [0.5 + shift, np.nan, 0.8 + shift],
            "message_bytes_down": [1000, 800, 600],
            "message_bytes_up": [500, 400, 300],
            "mean_density": [0.8, 0.64, 0.51],
        }
    )
    clients = pd.DataFrame(
        {
            "round": [3] * len(levels),
            "phase": ["evaluate"] * len(levels),
            "status": ["ok"] * len(levels),
            "partition_id": list(range(len(levels))),
            "device_class": ["simulated"] * len(levels),
            "density_level": list(levels),
            "served_accuracy": [0.7 + 0.05 * i for i in range(len(levels))],
        }
    )
    comm = pd.DataFrame(
        {
            "partition_id": [0, 0, 1, 1],
            "direction": ["down", "up", "down", "up"],
            "message_bytes": [100, 50, 120, 60],
        }
    )
    config = {"algorithm": "flash", "flash-mode": "hetero"} if len(set(levels)) > 1 else {}
    run = {"config": config, "rounds": rounds, "clients": clients, "comm": comm}
    if masks:
        run["masks"] = masks_frame(
            {p: {"w": np.arange(12).reshape(3, 4) % (p + 2) == 0} for p in range(3)}
        )
    return run


def test_every_figure_is_drawn_from_hand_made_tables(tmp_path) -> None:
    runs = {
        "A": _hand_made_run(0.0, masks=True, levels=(0.5, 0.75, 1.0)),
        "B": _hand_made_run(0.1, masks=False, levels=(1.0, 1.0, 1.0)),
    }
    drawn = plots.draw_all(runs, tmp_path)
    assert set(drawn) == set(plots.FIGURES)
    for path in drawn.values():
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
    only_b = {"B": runs["B"]}
    assert plots.mask_overlap(only_b, tmp_path / "x.png") is None  # no masks table
    assert plots.accuracy_per_device_class(only_b, tmp_path / "y.png") is None  # one class


@pytest.fixture(scope="module")
def session_runs(tmp_path_factory) -> list[Path]:
    """Two tiny runs through the real strategy and client code (loopback grid)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for algorithm in ("fedavg", "lotteryfl"):
        run_config = three_client_config(root, algorithm=algorithm)
        strategy = run_federation(
            LoopbackGrid(3, run_config), RunConfig.from_run_config(run_config)
        )
        dirs.append(strategy.run_dir.path)
    return dirs


def test_a_run_writes_its_clients_masks(session_runs) -> None:
    run = load_run(session_runs[1])
    masks = masks_from_frame(run["masks"])
    assert sorted(masks) == [0, 1, 2]
    assert all(
        abs(sum(int(m.sum()) for m in t.values()) / 21750 - 0.64) < 0.01 for t in masks.values()
    )
    assert "masks" not in load_run(session_runs[0])  # FedAvg has none


def test_report_prints_one_screen(session_runs, capsys) -> None:
    assert report_main([str(session_runs[1])]) == 0
    text = capsys.readouterr().out
    assert "algorithm  lotteryfl" in text and "rounds 2/2" in text
    assert "below dense" in text and "failures   none" in text
    assert len(text.splitlines()) <= 15
    assert report_main([str(session_runs[1].parent)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_notebook_runs_against_this_sessions_runs(session_runs, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEDTICKET_RUN_DIRS", os.pathsep.join(str(p) for p in session_runs))
    monkeypatch.setenv("FEDTICKET_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parents[2])}},
    ).execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 6
    assert (tmp_path / "figures" / "mask_overlap.png").exists()


@pytest.mark.slow
def test_compare_runs_each_config_once_and_writes_table_and_figures(tmp_path) -> None:
    """The smoke preset's base, one algorithm over two seeds: two launches (each is most of
    half a minute); the planning of all four of the smoke preset's runs is checked fast below."""
    from fedticket.simulations.compare import compare

    smoke = (PRESETS / "compare" / "smoke.toml").read_text()
    preset = tmp_path / "two-seeds.toml"
    preset.write_text(smoke[: smoke.index("[[runs]]")] + LOTTERYFL_RUN)
    table, target = compare(str(preset), output_root=str(tmp_path / "runs"), progress=False)
    assert table["run"].tolist() == ["LotteryFL seed=1", "LotteryFL seed=2"]
    assert not table["reused"].any()
    assert table["seed"].tolist() == [1, 2] and (table["rounds"] == 2).all()
    assert (target / "comparison.csv").exists() and (target / "comparison.md").exists()
    seeds = pd.read_csv(target / "comparison_seeds.csv")
    assert seeds["run"].tolist() == ["LotteryFL"] and (seeds["seeds"] == 2).all()
    served = table["served_last3"]
    assert seeds.loc[0, "served_last3"] == f"{served.mean():.3f} ± {served.std():.3f}"
    assert {p.name for p in (target / "plots").iterdir()} >= {
        "accuracy_vs_bytes.png",
        "mask_overlap.png",
    }
    again, _ = compare(str(preset), output_root=str(tmp_path / "runs"), progress=False)
    assert again["reused"].all()  # same config hash: nothing re-run


def test_the_smoke_preset_plans_two_algorithms_over_two_seeds(tmp_path) -> None:
    from fedticket.simulations.compare import load_preset

    _name, planned = load_preset("smoke", str(tmp_path / "runs"))
    assert [p.label for p in planned] == [
        "FedAvg seed=1",
        "LotteryFL seed=1",
        "FedAvg seed=2",
        "LotteryFL seed=2",
    ]
    assert all(p.config["num-rounds"] == 2 for p in planned)
    assert len({p.run_dir for p in planned}) == 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('seeds = [1, 1]\n[[runs]]\nlabel = "a"\n', "distinct integers"),
        ('seeds = []\n[[runs]]\nlabel = "a"\n', "non-empty list"),
        ('seeds = [1, 2]\n[[runs]]\nlabel = "a"\nseed = 3\n', "cannot set its own seed"),
    ],
)
def test_compare_preset_seeds_are_checked(tmp_path, body: str, message: str) -> None:
    from fedticket.simulations.compare import CompareError, load_preset

    (tmp_path / "bad.toml").write_text(body)
    with pytest.raises(CompareError, match=message):
        load_preset(str(tmp_path / "bad.toml"))


def test_compare_preset_with_seeds_plans_each_run_once_per_seed(tmp_path) -> None:
    from fedticket.simulations.compare import load_preset

    (tmp_path / "two.toml").write_text('seeds = [4, 9]\n[[runs]]\nlabel = "a"\n')
    _name, planned = load_preset(str(tmp_path / "two.toml"), str(tmp_path / "runs"))
    assert [(p.label, p.group, p.config["seed"]) for p in planned] == [
        ("a seed=4", "a", 4),
        ("a seed=9", "a", 9),
    ]
    assert planned[0].run_dir != planned[1].run_dir
