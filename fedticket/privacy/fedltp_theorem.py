"""Fed-LTP's own privacy figure, Theorem 1 (Shi et al., arXiv 2305.01387, Eqs. 20-24), beside
the library figure of ``fedticket.privacy.accounting``.

As its definitions intend (docs/algorithms/fedltp.md section 1.5): the RDP of one sampled
Gaussian step (Abadi et al. / Mironov; the standard single mixture, where the printed Eq. 21
mixes twice) composed once per round, plus the validation's zCDP term, one Laplace count of
scale lambda_val per round (epsilon_val = 1 / lambda_val, so rho = epsilon_val^2 / 2 and an
RDP of alpha rho: Lemma 1 and Eq. 8; the printed Eq. 23 carries an extra (alpha - 1)); then
the conversion of Eq. 22, minimised over the orders. Composing once per round counts one of
the tau noisy steps a round takes, so for tau > 1 it is below the library figure: the run's
budget stop uses the library's.
"""

from __future__ import annotations

import dp_accounting
from dp_accounting import rdp

from fedticket.privacy.accounting import ORDERS
from fedticket.privacy.zcdp import epsilon_from_rdp, pure_dp_rho


def sampled_gaussian_rdp(
    noise_multiplier: float, sample_rate: float, orders: tuple[float, ...] = ORDERS
) -> list[float]:
    """RDP of one Poisson-sampled Gaussian step at each order (dp-accounting's values)."""
    step = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sample_rate < 1:
        step = dp_accounting.PoissonSampledDpEvent(sample_rate, step)
    accountant = rdp.RdpAccountant(list(orders))
    accountant.compose(step)
    return [float(v) for v in accountant.rdp]


def theorem1_epsilon(
    rounds: int,
    noise_multiplier: float,
    sample_rate: float,
    validation_scale: float | None,
    delta: float,
    orders: tuple[float, ...] = ORDERS,
) -> float:
    """Theorem 1's epsilon after ``rounds`` rounds (its t + 1): see the module docstring.
    ``validation_scale`` None: no validation term."""
    if rounds <= 0:
        return 0.0
    sampled = sampled_gaussian_rdp(noise_multiplier, sample_rate, orders)
    rho_val = pure_dp_rho(1.0 / validation_scale) if validation_scale is not None else 0.0
    return min(
        epsilon_from_rdp(order, rounds * (step + order * rho_val), delta)
        for order, step in zip(orders, sampled, strict=True)
    )
