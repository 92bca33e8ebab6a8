"""Closed forms of zero-concentrated DP (Bun and Steinke, "Concentrated differential privacy:
simplifications, extensions, and lower bounds", TCC 2016).

rho-zCDP means an RDP of at most alpha * rho at every order alpha > 1; rho adds up under
composition. Used to check the accountant (a Gaussian mechanism without subsampling is exactly
1 / (2 sigma^2)-zCDP) and for papers that state budgets in rho.
"""

from __future__ import annotations

import math


def gaussian_rho(noise_multiplier: float) -> float:
    """rho of the Gaussian mechanism whose noise std is ``noise_multiplier`` x sensitivity."""
    if not noise_multiplier > 0:
        raise ValueError(f"noise multiplier must be > 0, got {noise_multiplier}")
    return 1.0 / (2.0 * noise_multiplier**2)


def pure_dp_rho(epsilon: float) -> float:
    """rho of an epsilon-DP mechanism (e.g. Laplace with scale sensitivity / epsilon)."""
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    return epsilon**2 / 2.0


def epsilon_from_rho(rho: float, delta: float) -> float:
    """(epsilon, delta)-DP implied by rho-zCDP: rho + 2 sqrt(rho ln(1 / delta))."""
    if not (rho >= 0 and 0 < delta < 1):
        raise ValueError(f"need rho >= 0 and 0 < delta < 1, got rho={rho}, delta={delta}")
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def epsilon_from_rdp(order: float, rdp: float, delta: float) -> float:
    """(epsilon, delta) from an RDP value at one order (Balle et al. 2020, Proposition 12; the
    conversion Opacus, dp-accounting and Fed-LTP's Eq. 22 use)."""
    if not (order > 1 and rdp >= 0 and 0 < delta < 1):
        raise ValueError(f"need order > 1, rdp >= 0, 0 < delta < 1; got {order}, {rdp}, {delta}")
    return max(0.0, rdp + math.log1p(-1.0 / order) - math.log(delta * order) / (order - 1.0))
