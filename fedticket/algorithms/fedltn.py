"""FedLTN's hyper-parameters and pruning schedule (pure numpy): post-pruning counts, the step
schedule and the Jump-Start ticket. See ../shared/algorithms/fedltn.md sections 1.3 and 1.5.

Open choices (the paper's body was not readable; spec section 4):
- a step removes floor(rate * alive) entries per layer (LotteryFL's code removes
  ceil(rate * (alive - 1))), ties broken by flat index;
- the last step is clamped so that each layer keeps exactly ceil(target * size) entries, so
  "90 % sparse" is 90.0 % and not LotteryFL's 91.4 %.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from fedticket.config.fields import setting
from fedticket.config.limits import MAX_LR
from fedticket.config.sections import Section, register_section
from fedticket.sparse.masks import top_k_among


@register_section("fedltn")
@dataclass(frozen=True)
class FedLTNSettings(Section):
    """FedLTN's server momentum and Jump-Start (its pruning keys are LotteryFL's section)."""

    server_momentum: float = setting(
        0.9,
        "FedLTN: server momentum beta (FedAvgM velocity; 0 = keeper mean only)",
        low=0,
        high=0.999,
    )
    server_lr: float = setting(
        1.0,
        "FedLTN: server learning rate eta_s of the momentum step",
        low=0,
        low_open=True,
        high=MAX_LR,
    )
    jump_start: str = setting(
        "none",
        "FedLTN Jump-Start: off, a cohort prunes first for everyone, or local pre-pruning",
        choices=("none", "cohort", "local"),
    )
    jumpstart_fraction: float = setting(
        0.2,
        "FedLTN Jump-Start: share of clients in the cohort that prunes first",
        low=0,
        high=1,
        low_open=True,
    )


def target_count(size: int, target: float) -> int:
    """Entries a layer of ``size`` keeps at the target density (at least one)."""
    return max(1, math.ceil(Fraction(str(target)) * size))


def step_count(alive: int, size: int, rate: float, target: float) -> int:
    """Entries one post-pruning step removes from a layer: floor(rate * alive), clamped so the
    layer never falls below its target count (0 once it is there)."""
    floor = target_count(size, target)
    if alive <= floor:
        return 0
    return min(math.floor(Fraction(str(rate)) * alive), alive - floor)


def post_prune_counts(
    masks: Mapping[str, np.ndarray], rate: float, target: float
) -> dict[str, int]:
    """``step_count`` for every layer of ``masks`` (all 0: the ticket is at its target)."""
    return {
        name: step_count(int(np.count_nonzero(m)), m.size, rate, target)
        for name, m in masks.items()
    }


def scheduled_alive(size: int, rate: float, target: float, steps: int) -> int:
    """A layer's kept entries after ``steps`` post-pruning steps from dense."""
    alive = size
    for _ in range(steps):
        alive -= step_count(alive, size, rate, target)
    return alive


def steps_to_target(rate: float, target: float) -> int:
    """S_total: the fewest steps with (1 - rate)^k <= target (11 for 0.2 and 0.1)."""
    if target >= 1:
        return 0
    keep, density, steps = Fraction(1) - Fraction(str(rate)), Fraction(1), 0
    while density > Fraction(str(target)):
        density *= keep
        steps += 1
    return steps


def jumpstart_steps(rate: float, target: float) -> int:
    """S_js = ceil(S_total / 2): the steps the Jump-Start cohort takes for everyone."""
    return math.ceil(steps_to_target(rate, target) / 2)


def jumpstart_ticket(
    global_arrays: Mapping[str, np.ndarray],
    cohort_masks: list[Mapping[str, np.ndarray]],
    rate: float,
    target: float,
) -> dict[str, np.ndarray]:
    """The ticket every joiner starts from: per layer, the ``scheduled_alive(S_js)`` entries of
    largest |theta_global| among the entries at least one cohort client kept."""
    if not cohort_masks:
        raise ValueError("a Jump-Start ticket needs at least one cohort mask")
    steps = jumpstart_steps(rate, target)
    union = {
        name: np.logical_or.reduce([np.asarray(m[name], bool) for m in cohort_masks])
        for name in cohort_masks[0]
    }
    counts = {
        name: min(scheduled_alive(u.size, rate, target, steps), int(u.sum()))
        for name, u in union.items()
    }
    return top_k_among(global_arrays, union, counts)
