"""Summaries that do not lie by noise: what every comparison table reports per protocol.

One evaluation of a few clients moves several points from noise alone, so a run is summarised
by its final evaluated round *and* the mean of its last ``LAST_K`` evaluations, with the std
over clients beside each protocol's mean; several seeds of one setup are then reported as
mean +- std over seeds (``over_seeds``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from fedticket.learn.eval_protocols import PROTOCOLS

#: evaluations averaged at the end of a run (the issue's floor is 3)
LAST_K = 3


def run_summary(rounds: pd.DataFrame, k: int = LAST_K) -> dict[str, float]:
    """Per protocol, over the rounds where that protocol has a value: ``<p>_final`` (the last
    one), ``<p>_last<k>`` (mean of the last ``k``) and ``<p>_client_std`` (std over clients at
    that final round; NaN for ``global``, a single server-side score). ``local_clients_final``
    counts the clients behind the final ``local`` mean (clients that never trained have none)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ordered = rounds.sort_values("round")
    summary: dict[str, float] = {
        "evaluations": float(ordered["served_accuracy"].notna().sum())
        if "served_accuracy" in ordered
        else 0.0
    }
    for protocol in PROTOCOLS:
        column = f"{protocol}_accuracy"
        scored = ordered.dropna(subset=[column]) if column in ordered else ordered.iloc[:0]
        values = scored[column] if len(scored) else pd.Series(dtype=float)
        spread = scored.get(f"{column}_std")
        summary |= {
            f"{protocol}_final": float(values.iloc[-1]) if len(values) else math.nan,
            f"{protocol}_last{k}": float(values.tail(k).mean()) if len(values) else math.nan,
            f"{protocol}_client_std": float(spread.iloc[-1])
            if spread is not None and len(spread)
            else math.nan,
        }
    local = ordered.dropna(subset=["local_accuracy"]) if "local_accuracy" in ordered else None
    summary["local_clients_final"] = (
        float(local["local_clients"].iloc[-1])
        if local is not None and len(local) and "local_clients" in local
        else math.nan
    )
    return summary


def over_seeds(table: pd.DataFrame, by: Iterable[str], seed: str = "seed") -> pd.DataFrame:
    """Mean and std over seeds of every numeric column, one row per ``by`` group (in the
    table's own order), with ``seeds`` counting the runs. Columns become ``<c>_mean`` and
    ``<c>_std`` (sample std, ddof=1; NaN with one seed). A group where some seed has no value
    gets NaN, not the mean of the others under the full seed count."""
    by = list(by)
    numeric = [
        c
        for c in table.columns
        if c not in by and c != seed and pd.api.types.is_numeric_dtype(table[c])
    ]
    grouped = table.groupby(by, sort=False)[numeric]
    counts = table.groupby(by, sort=False).size().rename("seeds")
    complete = grouped.count().eq(counts, axis=0)
    means = grouped.mean().where(complete).add_suffix("_mean")
    stds = grouped.std(ddof=1).where(complete).add_suffix("_std")
    ordered = [f"{c}_{s}" for c in numeric for s in ("mean", "std")]
    return pd.concat([means, stds], axis=1)[ordered].join(counts).reset_index()


def mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``0.873 +- 0.012`` (just the mean when the std is NaN: one seed)."""
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def seeds_table(summary: pd.DataFrame, by: Iterable[str], columns: Iterable[str]) -> pd.DataFrame:
    """``over_seeds`` output shown as ``mean ± std`` strings for ``columns``."""
    by = list(by)
    shown = summary[by].copy()
    for column in columns:
        shown[column] = [
            mean_std(float(m), float(s))
            for m, s in zip(summary[f"{column}_mean"], summary[f"{column}_std"], strict=True)
        ]
    shown["seeds"] = summary["seeds"].to_numpy()
    return shown
