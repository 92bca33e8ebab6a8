"""Privacy accounting against closed forms (Bun and Steinke 2016 for zCDP; Mironov 2017 for the
RDP of the Laplace mechanism): what Fed-LTP's budget stop and tables will rest on."""

from __future__ import annotations

import math

import pytest

from fedticket.privacy.accounting import ORDERS, ClientPrivacy
from fedticket.privacy.zcdp import epsilon_from_rdp, epsilon_from_rho, gaussian_rho, pure_dp_rho

DELTA = 1e-3


@pytest.mark.parametrize("sigma", [0.7, 1.4, 5.0])
@pytest.mark.parametrize(("rounds", "steps"), [(1, 1), (10, 3), (100, 300)])
def test_unsampled_gaussian_steps_compose_to_the_zcdp_sum(sigma, rounds, steps) -> None:
    order = 8.0
    client = ClientPrivacy(sigma, sample_rate=1.0, steps_per_round=steps)
    spent = client.spent(rounds, DELTA, orders=(order,))
    rho = rounds * steps * gaussian_rho(sigma)  # rho adds up; RDP at order a is a * rho
    assert spent.epsilon == pytest.approx(epsilon_from_rdp(order, order * rho, DELTA), rel=1e-9)
    # the RDP optimum over the order grid is tighter than the zCDP conversion (which optimises
    # over every order) whenever its optimal order lies inside the grid, and never looser than
    # any single order of it
    best = client.spent(rounds, DELTA)
    if best.order > min(ORDERS):
        assert best.epsilon <= epsilon_from_rho(rho, DELTA) + 1e-9
    assert best.epsilon <= spent.epsilon + 1e-9


def test_the_laplace_validation_adds_its_renyi_divergence() -> None:
    order, scale = 4.0, 2.0
    gaussian = ClientPrivacy(1.4, sample_rate=1.0, steps_per_round=1)
    with_validation = ClientPrivacy(1.4, sample_rate=1.0, steps_per_round=1, validation_scale=scale)
    # Mironov 2017, Proposition 6: Laplace with scale b (sensitivity 1) at order a
    a, b = order, scale
    laplace = math.log(
        a / (2 * a - 1) * math.exp((a - 1) / b) + (a - 1) / (2 * a - 1) * math.exp(-a / b)
    ) / (a - 1)
    rdp = order * gaussian_rho(1.4) + laplace
    expected = epsilon_from_rdp(order, rdp, DELTA)
    assert with_validation.spent(1, DELTA, orders=(order,)).epsilon == pytest.approx(expected)
    assert with_validation.spent(5, DELTA).epsilon > gaussian.spent(5, DELTA).epsilon
    assert pure_dp_rho(1 / scale) == pytest.approx(0.125)  # eps_val = 1 / b -> eps^2 / 2


def test_subsampling_spends_less_and_spend_grows_with_rounds() -> None:
    full = ClientPrivacy(1.4, sample_rate=1.0, steps_per_round=10)
    sampled = ClientPrivacy(1.4, sample_rate=15 / 960, steps_per_round=10)
    assert sampled.spent(10, DELTA).epsilon < full.spent(10, DELTA).epsilon
    spends = [sampled.spent(r, DELTA).epsilon for r in (0, 1, 2, 5, 20)]
    assert spends[0] == 0 and spends == sorted(spends)


def test_the_budget_stop_finds_the_last_round_within_the_budget() -> None:
    client = ClientPrivacy(1.4, sample_rate=15 / 960, steps_per_round=300)
    budget = client.spent(7, DELTA).epsilon + 1e-6
    assert client.rounds_within(budget, DELTA, most=100) == 7
    assert client.rounds_within(1e-9, DELTA, most=100) == 0  # not even one round fits
    assert client.rounds_within(1e9, DELTA, most=100) == 100


@pytest.mark.parametrize(
    "bad",
    [
        {"noise_multiplier": 0.0},
        {"noise_multiplier": math.nan},
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"steps_per_round": 0},
        {"validation_scale": -1.0},
    ],
)
def test_impossible_mechanisms_are_refused(bad) -> None:
    values = {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps_per_round": 1} | bad
    with pytest.raises(ValueError):
        ClientPrivacy(**values)
