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
from fedticket.config.limits import MAX_TIMEOUT_S
from fedticket.config.sections import Section, register_section

MAX_SLOWDOWN = 1e4  # a device 10,000 x slower than the reference one: beyond any real edge board


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
    cell_deadline: float = setting(
        0.0,
        "CELL: modelled seconds a round waits; later replies are left out (0 = wait for all)",
        low=0,
        high=MAX_TIMEOUT_S,
    )
    cell_samples_per_second: float = setting(
        1000.0,
        "CELL: training samples a device of slowdown 1 processes per second (the time model)",
        low=0,
        low_open=True,
        high=1e9,
    )
    cell_slow_share: float = setting(
        0.25,
        "CELL: share of users without a node-config compute-slowdown that are slow (seeded)",
        low=0,
        high=1,
    )
    cell_slowdown: float = setting(
        4.0, "CELL: compute slowdown of those slow users", low=1, high=MAX_SLOWDOWN
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


def simulated_slowdowns(
    num_partitions: int, seed: int, slow_share: float, slowdown: float
) -> dict[int, float]:
    """Each partition's compute slowdown in a seeded mix: ceil(``slow_share`` x N) of them,
    drawn by the run seed, are ``slowdown`` times slower; the rest 1."""
    order = np.random.default_rng([seed, 0xCE11]).permutation(num_partitions)
    slow = set(order[: math.ceil(Fraction(str(slow_share)) * num_partitions)].tolist())
    return {pid: (slowdown if pid in slow else 1.0) for pid in range(num_partitions)}


def modelled_round_seconds(
    down_seconds: float,
    samples: int,
    epochs: int,
    samples_per_second: float,
    slowdown: float,
    up_seconds: float,
) -> float:
    """A user's modelled round time: the broadcast, its local epochs at its device's speed,
    its upload (a transfer without a link model counts 0)."""
    compute = samples * epochs / samples_per_second * slowdown
    return _known(down_seconds) + compute + _known(up_seconds)


def _known(seconds: float) -> float:
    return 0.0 if math.isnan(seconds) else seconds
