"""Record-level DP accounting of one client's training: rounds of DP-SGD steps (Poisson-sampled
Gaussian mechanisms) and, optionally, one Laplace-noised validation count per round (Fed-LTP,
arXiv 2305.01387, section 4.4).

The composition is the RDP accountant of Google's ``dp-accounting`` (``RdpAccountant``), the
maintained library Flower's DP support builds on; it counts every noisy step (a round of tau
steps is tau compositions). Clients hold disjoint records, so a run's spend is the largest of
its clients' (parallel composition); each client's sample rate is its own batch / data size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import dp_accounting
from dp_accounting import rdp

#: orders the accountant minimises over: dense near 1 (small budgets), then up to 256
ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256])


@dataclass(frozen=True)
class Spent:
    """Privacy spent after some rounds: (epsilon, delta)-DP at the best order."""

    rounds: int
    epsilon: float
    delta: float
    order: float


@dataclass(frozen=True)
class ClientPrivacy:
    """One client's mechanisms per round.

    noise_multiplier : the Gaussian noise std over the clipping norm (sigma).
    sample_rate : the chance each record joins a step's batch (batch size / records).
    steps_per_round : noisy steps per round (tau).
    validation_scale : the Laplace scale of the per-round validation count of sensitivity 1
        (Fed-LTP's lambda_val); None when no count is released.
    """

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    validation_scale: float | None = None

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ValueError(f"noise multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample rate must be in (0, 1], got {self.sample_rate}")
        if self.steps_per_round < 1:
            raise ValueError(f"steps per round must be >= 1, got {self.steps_per_round}")
        if self.validation_scale is not None and not self.validation_scale > 0:
            raise ValueError(f"validation scale must be > 0, got {self.validation_scale}")

    def round_event(self) -> dp_accounting.DpEvent:
        """One round's mechanisms as one composed event."""
        step = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if self.sample_rate < 1:
            step = dp_accounting.PoissonSampledDpEvent(self.sample_rate, step)
        events = [dp_accounting.SelfComposedDpEvent(step, self.steps_per_round)]
        if self.validation_scale is not None:
            events.append(dp_accounting.LaplaceDpEvent(self.validation_scale))
        return dp_accounting.ComposedDpEvent(events)

    def spent(self, rounds: int, delta: float, orders: tuple[float, ...] = ORDERS) -> Spent:
        """What ``rounds`` rounds spend, as (epsilon, ``delta``)-DP."""
        if rounds < 0 or not 0 < delta < 1:
            raise ValueError(f"need rounds >= 0 and 0 < delta < 1, got {rounds}, {delta}")
        if rounds == 0:
            return Spent(0, 0.0, delta, math.nan)
        accountant = rdp.RdpAccountant(list(orders))
        accountant.compose(self.round_event(), rounds)
        epsilon, order = accountant.get_epsilon_and_optimal_order(delta)
        return Spent(rounds, float(epsilon), delta, float(order))

    def rounds_within(self, epsilon: float, delta: float, most: int) -> int:
        """The most rounds (up to ``most``) whose spend stays within ``epsilon``: the budget
        stop (spend only grows with rounds, so a binary search finds it)."""
        low, high = 0, most
        while low < high:
            middle = (low + high + 1) // 2
            if self.spent(middle, delta).epsilon <= epsilon:
                low = middle
            else:
                high = middle - 1
        return low
