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
        """One round's mechanisms as one composed event (training and, if any, validation)."""
        return self.event(1, 1 if self.validation_scale is not None else 0)

    def event(self, rounds: int, validations: int) -> dp_accounting.DpEvent:
        """``rounds`` rounds of training and ``validations`` validation counts as one event
        (a client that validates in other rounds than it trains counts each on its own)."""
        step = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if self.sample_rate < 1:
            step = dp_accounting.PoissonSampledDpEvent(self.sample_rate, step)
        events = [dp_accounting.SelfComposedDpEvent(step, self.steps_per_round * rounds)]
        if validations:
            if self.validation_scale is None:
                raise ValueError("validations need a validation scale")
            laplace = dp_accounting.LaplaceDpEvent(self.validation_scale)
            events.append(dp_accounting.SelfComposedDpEvent(laplace, validations))
        return dp_accounting.ComposedDpEvent(events)

    def spent(
        self,
        rounds: int,
        delta: float,
        orders: tuple[float, ...] = ORDERS,
        validations: int | None = None,
    ) -> Spent:
        """What ``rounds`` rounds of training and ``validations`` validation counts (default:
        one per round when a validation scale is set) spend, as (epsilon, ``delta``)-DP."""
        if validations is None:
            validations = rounds if self.validation_scale is not None else 0
        if rounds < 0 or validations < 0 or not 0 < delta < 1:
            raise ValueError(
                f"need rounds, validations >= 0 and 0 < delta < 1, got {rounds}, "
                f"{validations}, {delta}"
            )
        if rounds == 0 and validations == 0:
            return Spent(0, 0.0, delta, math.nan)
        accountant = self._accountant(rounds, validations, orders)
        epsilon, order = accountant.get_epsilon_and_optimal_order(delta)
        return Spent(rounds, float(epsilon), delta, float(order))

    def rho(self, rounds: int, validations: int | None = None) -> float:
        """The smallest rho with RDP(alpha) <= alpha rho at every order of the grid: zCDP's
        rho as far as the accountant's curve shows it, over the orders where it is finite
        (exact for the Gaussian and the Laplace parts alone; the subsampled Gaussian has no
        closed-form rho, Bun and Steinke 2016, so this is near the unsampled one's)."""
        if validations is None:
            validations = rounds if self.validation_scale is not None else 0
        if rounds == 0 and validations == 0:
            return 0.0
        accountant = self._accountant(rounds, validations, ORDERS)
        ratios = [r / a for r, a in zip(accountant.rdp, ORDERS, strict=True) if math.isfinite(r)]
        return float(max(ratios, default=math.inf))

    def _accountant(
        self, rounds: int, validations: int, orders: tuple[float, ...]
    ) -> rdp.RdpAccountant:
        accountant = rdp.RdpAccountant(list(orders))
        accountant.compose(self.event(rounds, validations))
        return accountant

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
