"""The analysis figures, drawn from the results tables (pandas in, PNG out).

One function per figure; each takes ``runs`` (label -> a run as ``fedticket.store.results.load_run``
returns it) and a target path, writes the PNG and returns its path. The compare command and the
notebook call the same functions, so they draw the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedticket.learn.eval_protocols import PROTOCOLS
from fedticket.sparse.consensus import pairwise_jaccard
from fedticket.store.results import masks_from_frame

Runs = Mapping[str, Mapping[str, Any]]


def _subplots(figsize: tuple[float, float], rows: int = 1, cols: int = 1, **kw: Any):
    """A figure without pyplot: no global state and no display backend (servers, CI, devices,
    and a notebook that shows the saved PNG)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, **kw)


#: the protocol of the single-protocol figures: every algorithm has it
#: (fedticket.learn.eval_protocols)
HEADLINE = "served_accuracy"


def _label(column: str) -> str:
    return column.replace("_", " ") + " (mean over clients)"


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _evaluated(rounds: pd.DataFrame) -> pd.DataFrame:
    frame = rounds.sort_values("round").copy()
    frame["cumulative_bytes"] = (frame["message_bytes_down"] + frame["message_bytes_up"]).cumsum()
    return frame.dropna(subset=[HEADLINE])


def _final_clients(run: Mapping[str, Any]) -> pd.DataFrame:
    """Each client's row of the last evaluated round."""
    clients = run["clients"]
    evals = clients[(clients["phase"] == "evaluate") & (clients["status"] == "ok")]
    if evals.empty:
        return evals
    return evals[evals["round"] == evals["round"].max()]


def accuracy_vs_bytes(runs: Runs, path: str | Path) -> Path:
    """Served accuracy against cumulative message bytes (both directions, log scale)."""
    fig, ax = _subplots((6.5, 4.2))
    for label, run in runs.items():
        frame = _evaluated(run["rounds"])
        ax.plot(frame["cumulative_bytes"], frame[HEADLINE], marker=".", label=label)
    ax.set_xscale("log")
    ax.set(xlabel="cumulative message bytes (down + up)", ylabel=_label(HEADLINE))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def accuracy_vs_round(runs: Runs, path: str | Path) -> Path:
    """One panel per evaluation protocol (fedticket.learn.eval_protocols), every run in each: the
    protocols side by side, never one mistaken for another."""
    fig, axes = _subplots((11, 7), 2, 2, squeeze=False, sharex=True)
    for ax, protocol in zip(axes.flat, PROTOCOLS, strict=True):
        column = f"{protocol}_accuracy"
        for label, run in runs.items():
            frame = _evaluated(run["rounds"])
            if column in frame and frame[column].notna().any():
                ax.plot(frame["round"], frame[column], marker=".", label=label)
        ax.set(title=f"{protocol}: {PROTOCOLS[protocol]}", xlabel="round", ylabel="accuracy")
        ax.title.set_fontsize(8)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    return _save(fig, path)


def client_accuracy_distribution(runs: Runs, path: str | Path) -> Path:
    """Per-client served accuracy at each run's last evaluated round."""
    labels, values = [], []
    for label, run in runs.items():
        final = _final_clients(run)
        labels.append(label)
        values.append(final[HEADLINE].dropna().to_numpy())
    fig, ax = _subplots((max(4.5, 1.3 * len(labels)), 4.2))
    ax.boxplot(values, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=f"{_label(HEADLINE)} per client (last round)")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def bytes_per_client(runs: Runs, path: str | Path) -> Path:
    """Total message bytes per client and direction, one panel per run."""
    n = len(runs)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = _subplots((4.2 * cols, 3.2 * rows), rows, cols, squeeze=False)
    for ax, (label, run) in zip(axes.flat, runs.items(), strict=False):
        comm = run["comm"]
        comm = comm[comm["partition_id"] >= 0]
        table = comm.pivot_table(
            index="partition_id", columns="direction", values="message_bytes", aggfunc="sum"
        ).reindex(columns=["down", "up"], fill_value=0)
        x = np.arange(len(table))
        ax.bar(x - 0.2, table["down"] / 1e6, width=0.4, label="down")
        ax.bar(x + 0.2, table["up"] / 1e6, width=0.4, label="up")
        ax.set_xticks(x, table.index, fontsize=7)
        ax.set(title=label, xlabel="partition id", ylabel="MB")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _save(fig, path)


def density_over_rounds(runs: Runs, path: str | Path) -> Path:
    """Mean density of the trained clients' masks per round."""
    fig, ax = _subplots((6.5, 4.2))
    for label, run in runs.items():
        rounds = run["rounds"].dropna(subset=["mean_density"])
        ax.plot(rounds["round"], rounds["mean_density"], label=label)
    ax.set(xlabel="round", ylabel="mean density of trained masks", ylim=(0, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def mask_overlap(runs: Runs, path: str | Path) -> Path | None:
    """Jaccard overlap between clients' current masks, one heat-map per run that has masks
    (``masks.parquet``); None when no run has any."""
    with_masks = {k: r for k, r in runs.items() if r.get("masks") is not None and len(r["masks"])}
    if not with_masks:
        return None
    n = len(with_masks)
    cols = min(n, 5)  # wrap: a comparison over seeds has many runs
    rows = math.ceil(n / cols)
    fig, axes = _subplots((4.4 * cols, 3.8 * rows), rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    for ax, (label, run) in zip(axes.flat, with_masks.items(), strict=False):
        masks = masks_from_frame(run["masks"])
        pids = sorted(masks)
        matrix = pairwise_jaccard([masks[p] for p in pids])
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        ticks = range(len(pids)) if len(pids) <= 20 else range(0, len(pids), len(pids) // 10)
        ax.set_xticks(list(ticks), [pids[i] for i in ticks], fontsize=6)
        ax.set_yticks(list(ticks), [pids[i] for i in ticks], fontsize=6)
        ax.set(title=f"{label}: mask Jaccard", xlabel="partition id", ylabel="partition id")
        fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def _hetero(run: Mapping[str, Any]) -> bool:
    """Whether the run gave devices different density budgets (hetero-FLASH); elsewhere the
    simulated budget levels mean nothing."""
    config = run.get("config", {})
    return config.get("algorithm") == "flash" and config.get("flash-mode") == "hetero"


def accuracy_per_device_class(runs: Runs, path: str | Path) -> Path | None:
    """Last-round served accuracy per device class (deployed nodes) or per density budget
    (simulated hetero nodes); None when every run has a single class and budget."""
    rows = []
    for label, run in runs.items():
        final = _final_clients(run)
        if final.empty or "device_class" not in final:
            continue
        declared = set(final["device_class"].dropna()) - {"simulated", ""}
        if declared:
            groups = final["device_class"]
        elif _hetero(run) and final["density_level"].nunique() > 1:
            groups = final["density_level"].map(lambda v: f"budget {v:g} x")
        else:
            continue
        for group, acc in zip(groups, final[HEADLINE], strict=True):
            rows.append({"run": label, "group": group, "accuracy": acc})
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    table = frame.groupby(["run", "group"])["accuracy"].mean().unstack()
    table = table.reindex(list(dict.fromkeys(frame["run"])))  # the runs' own order
    fig, ax = _subplots((6.5, 4.2))
    table.plot.bar(ax=ax, rot=20)
    ax.set(xlabel="", ylabel=f"{_label(HEADLINE)} (last round)")
    ax.legend(fontsize=8, title="device")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


FIGURES = {
    "accuracy_vs_bytes": accuracy_vs_bytes,
    "accuracy_vs_round": accuracy_vs_round,
    "client_accuracy": client_accuracy_distribution,
    "bytes_per_client": bytes_per_client,
    "density": density_over_rounds,
    "mask_overlap": mask_overlap,
    "accuracy_per_device": accuracy_per_device_class,
}


def draw_all(runs: Runs, directory: str | Path) -> dict[str, Path]:
    """Every figure that applies to ``runs``, as ``<directory>/<name>.png``."""
    drawn = {}
    for name, figure in FIGURES.items():
        path = figure(runs, Path(directory) / f"{name}.png")
        if path is not None:
            drawn[name] = path
    return drawn
