"""CELL's hyper-parameters and lottery schedule (Seo et al., "Communication-efficient and
personalized federated lottery ticket learning", SPAWC 2021, arXiv 2104.12501;
docs/algorithms/cell.md).

The schedule is additive (the paper's gamma_k <- min(gamma_k + gamma, gamma_hat)): with the
defaults a user's density goes 1, 0.8, 0.6, 0.4, 0.2 over its lottery steps, against
LotteryFL's multiplicative 1, 0.8, 0.64, ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from fedticket.config.fields import setting
from fedticket.config.sections import Section, register_section


@register_section("cell")
@dataclass(frozen=True)
class CellSettings(Section):
    """CELL's lottery step, target, per-user threshold ramping and aggregation."""

    cell_prune_step: float = setting(
        0.2,
        "CELL: share of each layer's weights one lottery step adds to the pruned share (gamma)",
        low=0,
        high=1,
        low_open=True,
    )
    cell_target_pruned: float = setting(
        0.8, "CELL: pruned share at which a user's ticket is done (gamma-hat)", low=0, high=0.999
    )
    cell_threshold: float = setting(
        0.5,
        "CELL: validation accuracy the broadcast model needs for a lottery step (zeta-hat)",
        low=-1,
        high=1,
    )
    cell_threshold_decay: float = setting(
        0.5,
        "CELL: factor a straggler's threshold is multiplied by after a failed test (alpha)",
        low=0,
        high=1,
    )
    cell_aggregation: str = setting(
        "fedavg",
        "CELL: sample-weighted mean with pruned entries as 0 (paper) or LotteryFL's keeper mean",
        choices=("fedavg", "keeper"),
    )


def next_pruned_share(pruned: float, step: float, target: float) -> float:
    """The pruned share after one more lottery step (exact in decimal: 0.2 + 0.2 + 0.2 is 0.6)."""
    share = min(Fraction(str(pruned)) + Fraction(str(step)), Fraction(str(target)))
    return float(share)


def kept_count(size: int, pruned: float) -> int:
    """Entries a layer of ``size`` keeps at pruned share ``pruned`` (at least one)."""
    return max(1, size - math.floor(Fraction(str(pruned)) * size))


def removal_counts(masks: Mapping[str, np.ndarray], pruned: float) -> dict[str, int]:
    """Per layer, how many kept entries to drop to reach pruned share ``pruned``."""
    return {
        name: max(0, int(mask.sum()) - kept_count(mask.size, pruned))
        for name, mask in masks.items()
    }
