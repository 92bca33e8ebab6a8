"""The analysis figures, drawn from the results tables (pandas in, PNG out).

One function per figure; each takes ``runs`` (label -> a run as ``fedticket.store.results.load_run``
returns it) and a target path, writes the PNG and returns its path; ``build(name, runs)`` gives
the figure itself (the figure tests read its axes). The compare command and the notebook call
the same functions, so they draw the same figures. Every figure carries a caption line with the
setup (``fedticket.analysis.labels.setup_caption``), byte axes in KB / MB / GB, round axes in
whole rounds, accuracy panels on one shared 0-1 scale with the spread over clients as a band,
and clients as points where there are too few for a box plot.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedticket.analysis.labels import setup_caption
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


#: fewest clients for a box plot; fewer are drawn as points
MIN_BOX = 5
#: byte units for axes, largest first
UNITS = (("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1.0))


def _label(column: str) -> str:
    return column.replace("_", " ") + " (mean over clients)"


def byte_unit(largest: float) -> tuple[str, float]:
    """The unit that shows ``largest`` bytes as a number of at least 1."""
    return next(((u, f) for u, f in UNITS if largest >= f), UNITS[-1])


def _whole_rounds(ax: Any) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _finish(fig: Figure, runs: Runs) -> Figure:
    """The caption under the axes (wrapped to the figure's width), and the layout around it."""
    width, height = fig.get_size_inches()
    lines = textwrap.wrap(setup_caption(runs), width=int(width * 15))  # 7 pt: ~15 chars/inch
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, ha="left", va="bottom", alpha=0.8)
    fig.tight_layout(rect=(0, (0.06 + 0.12 * len(lines)) / height, 1, 1))  # ~0.12 in a line
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def build_accuracy_vs_bytes(runs: Runs) -> Figure:
    """Served accuracy against cumulative message bytes (both directions, log scale)."""
    fig, ax = _subplots((6.5, 4.4))
    frames = {label: _evaluated(run["rounds"]) for label, run in runs.items()}
    largest = max((f["cumulative_bytes"].max() for f in frames.values() if len(f)), default=1)
    unit, factor = byte_unit(float(largest))
    for label, frame in frames.items():
        ax.plot(frame["cumulative_bytes"] / factor, frame[HEADLINE], marker=".", label=label)
    ax.set_xscale("log")
    ax.set(xlabel=f"cumulative Flower message {unit} (down + up)", ylabel=_label(HEADLINE))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, runs)


def build_accuracy_vs_round(runs: Runs) -> Figure:
    """One panel per evaluation protocol (fedticket.learn.eval_protocols), every run in each,
    on one 0-1 scale: the mean over clients, and mean +- std over clients as a band."""
    fig, axes = _subplots((11, 7.4), 2, 2, squeeze=False, sharex=True, sharey=True)
    for ax, protocol in zip(axes.flat, PROTOCOLS, strict=True):
        column = f"{protocol}_accuracy"
        for label, run in runs.items():
            frame = _evaluated(run["rounds"])
            if column not in frame or not frame[column].notna().any():
                continue
            (line,) = ax.plot(frame["round"], frame[column], marker=".", label=label)
            if f"{column}_std" in frame:
                low = (frame[column] - frame[f"{column}_std"]).clip(0, 1)
                high = (frame[column] + frame[f"{column}_std"]).clip(0, 1)
                ax.fill_between(frame["round"], low, high, color=line.get_color(), alpha=0.15)
        ax.set(title=f"{protocol}: {PROTOCOLS[protocol]}", xlabel="round", ylabel="accuracy")
        ax.set_ylim(0, 1)
        ax.title.set_fontsize(8)
        ax.grid(alpha=0.3)
        _whole_rounds(ax)
        if ax.has_data():
            ax.legend(fontsize=7)
    return _finish(fig, runs)


def build_client_accuracy(runs: Runs) -> Figure:
    """Per-client served accuracy at each run's last evaluated round: a box plot where a run
    has ``MIN_BOX`` clients or more, the clients as points (and their mean) where it has fewer."""
    labels = list(runs)
    fig, ax = _subplots((max(4.5, 1.3 * len(labels)), 4.4))
    for i, run in enumerate(runs.values(), start=1):
        values = _final_clients(run)[HEADLINE].dropna().to_numpy()
        if len(values) >= MIN_BOX:
            ax.boxplot([values], positions=[i], showmeans=True, widths=0.5)
        else:
            offsets = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
            ax.scatter(i + np.asarray(offsets), values, s=18, label=None)
            if len(values):
                ax.scatter([i], [values.mean()], marker="_", s=400, color="black")
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20, ha="right", fontsize=8)
    ax.set_xlim(0.5, len(labels) + 0.5)
    ax.set(ylabel=f"{HEADLINE.replace('_', ' ')} per client (last round)", ylim=(0, 1))
    ax.grid(alpha=0.3, axis="y")
    return _finish(fig, runs)


def build_bytes_per_client(runs: Runs) -> Figure:
    """Total message bytes per client and direction, one panel per run, one scale for all."""
    n = len(runs)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = _subplots((4.2 * cols, 3.4 * rows), rows, cols, squeeze=False, sharey=True)
    tables = {}
    for label, run in runs.items():
        comm = run["comm"]
        comm = comm[comm["partition_id"] >= 0]
        tables[label] = comm.pivot_table(
            index="partition_id", columns="direction", values="message_bytes", aggfunc="sum"
        ).reindex(columns=["down", "up"], fill_value=0)
    largest = max((float(t.to_numpy().max()) for t in tables.values() if t.size), default=1.0)
    unit, factor = byte_unit(largest)
    for ax, (label, table) in zip(axes.flat, tables.items(), strict=False):
        x = np.arange(len(table))
        ax.bar(x - 0.2, table["down"] / factor, width=0.4, label="down")
        ax.bar(x + 0.2, table["up"] / factor, width=0.4, label="up")
        ax.set_xticks(x, table.index, fontsize=7)
        ax.set(title=label, xlabel="partition id", ylabel=f"Flower message {unit}")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _finish(fig, runs)


def build_density(runs: Runs) -> Figure:
    """Mean density of the trained clients' masks per round."""
    fig, ax = _subplots((6.5, 4.4))
    for label, run in runs.items():
        rounds = run["rounds"].dropna(subset=["mean_density"])
        ax.plot(rounds["round"], rounds["mean_density"], marker=".", label=label)
    ax.set(xlabel="round", ylabel="mean density of trained masks", ylim=(0, 1.05))
    _whole_rounds(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, runs)


def build_mask_overlap(runs: Runs) -> Figure | None:
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
    return _finish(fig, with_masks)


def _hetero(run: Mapping[str, Any]) -> bool:
    """Whether the run gave devices different density budgets (hetero-FLASH); elsewhere the
    simulated budget levels mean nothing."""
    config = run.get("config", {})
    return config.get("algorithm") == "flash" and config.get("flash-mode") == "hetero"


def build_accuracy_per_device(runs: Runs) -> Figure | None:
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
    return _finish(fig, runs)


#: figure name -> its builder (None: the figure does not apply to these runs)
BUILDERS = {
    "accuracy_vs_bytes": build_accuracy_vs_bytes,
    "accuracy_vs_round": build_accuracy_vs_round,
    "client_accuracy": build_client_accuracy,
    "bytes_per_client": build_bytes_per_client,
    "density": build_density,
    "mask_overlap": build_mask_overlap,
    "accuracy_per_device": build_accuracy_per_device,
}
FIGURES = tuple(BUILDERS)


def build(name: str, runs: Runs) -> Figure | None:
    return BUILDERS[name](runs)


def accuracy_vs_bytes(runs: Runs, path: str | Path) -> Path:
    return _save(build_accuracy_vs_bytes(runs), path)


def accuracy_vs_round(runs: Runs, path: str | Path) -> Path:
    return _save(build_accuracy_vs_round(runs), path)


def client_accuracy_distribution(runs: Runs, path: str | Path) -> Path:
    return _save(build_client_accuracy(runs), path)


def bytes_per_client(runs: Runs, path: str | Path) -> Path:
    return _save(build_bytes_per_client(runs), path)


def density_over_rounds(runs: Runs, path: str | Path) -> Path:
    return _save(build_density(runs), path)


def mask_overlap(runs: Runs, path: str | Path) -> Path | None:
    fig = build_mask_overlap(runs)
    return None if fig is None else _save(fig, path)


def accuracy_per_device_class(runs: Runs, path: str | Path) -> Path | None:
    fig = build_accuracy_per_device(runs)
    return None if fig is None else _save(fig, path)


def draw_all(runs: Runs, directory: str | Path) -> dict[str, Path]:
    """Every figure that applies to ``runs``, as ``<directory>/<name>.png``."""
    drawn = {}
    for name in FIGURES:
        fig = build(name, runs)
        if fig is not None:
            drawn[name] = _save(fig, Path(directory) / f"{name}.png")
    return drawn
