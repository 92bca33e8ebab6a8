"""FLASH consensus maths: the spec's closed-form cases (../shared/algorithms/flash.md section 8)."""

from __future__ import annotations

import numpy as np
import pytest

from fedticket.sparse.aggregate import coverage_mean
from fedticket.sparse.consensus import (
    layer_budgets,
    mean_pairwise_jaccard,
    nested_masks,
    random_masks,
    rescale_layer_densities,
    top_k_masks,
)


def test_a_stage1_rescale_sums_to_the_target_density() -> None:
    sizes = {"a": 100, "b": 900}
    clients = [{"a": 50, "b": 45}, {"a": 30, "b": 45}]
    mean = {n: np.mean([c[n] for c in clients]) / sizes[n] for n in sizes}  # (0.4, 0.05)
    scaled = rescale_layer_densities(mean, sizes, 0.1)
    assert scaled["a"] == pytest.approx(0.470588, abs=1e-6) and scaled["b"] == pytest.approx(
        0.058824, abs=1e-6
    )
    assert sum(scaled[n] * sizes[n] for n in sizes) == pytest.approx(100)
    capped = rescale_layer_densities({"a": 0.9, "b": 0.0}, {"a": 10, "b": 990}, 0.1)
    assert capped == {"a": 1.0, "b": 0.0}  # the code's rule: the excess is not redistributed
    spread = rescale_layer_densities(
        {"a": 0.9, "b": 0.01}, {"a": 10, "b": 990}, 0.1, redistribute=True
    )
    assert spread["a"] == 1.0 and spread["a"] * 10 + spread["b"] * 990 == pytest.approx(100)


def test_stage1_masks_have_exact_counts() -> None:
    masks = random_masks(
        {"a": (10, 10), "b": (30, 30)}, {"a": 0.470588, "b": 0.058824}, np.random.default_rng(0)
    )
    assert int(masks["a"].sum()) == 47 and int(masks["b"].sum()) == 53


def test_b_consensus_top_k_on_a_hand_made_aggregate() -> None:
    aggregate = {
        "a": np.array([0.1, -0.5, 0.3, 0.0]),
        "b": np.array([0.2, -0.9, 0.05, 0.7, 0.0, 0.4]),
    }
    sizes = {"a": 4, "b": 6}
    clients = [
        {"a": np.array([1, 1, 0, 0], bool), "b": np.array([1, 1, 0, 0, 0, 0], bool)},
        {"a": np.array([0, 1, 1, 0], bool), "b": np.array([0, 1, 1, 1, 0, 1], bool)},
    ]
    avg = layer_budgets(sizes, 0.4, client_masks=clients)
    assert avg == {"a": 1, "b": 2}  # b = (2, 3), ratio 0.8, floored
    agg = layer_budgets(sizes, 0.4, aggregate=aggregate)
    assert agg == {"a": 1, "b": 2}  # nnz (3, 5), ratio 0.5
    masks = top_k_masks(aggregate, avg)
    assert np.flatnonzero(masks["a"]).tolist() == [1] and np.flatnonzero(masks["b"]).tolist() == [
        1,
        3,
    ]


def test_c_hetero_levels_are_nested_with_the_stated_counts() -> None:
    rng = np.random.default_rng(3)
    aggregate = {
        "a": rng.standard_normal((20, 30)) * (rng.random((20, 30)) < 0.3),
        "b": rng.standard_normal(500),
    }
    sizes = {n: v.size for n, v in aggregate.items()}
    levels = nested_masks(aggregate, sizes, [0.05, 0.075, 0.1])
    for small, large in ((0.05, 0.075), (0.075, 0.1)):
        for n in sizes:
            assert not np.any(levels[small][n] & ~levels[large][n])
    for level, masks in levels.items():
        expected = layer_budgets(sizes, level, aggregate=aggregate)
        assert {n: int(m.sum()) for n, m in masks.items()} == expected


def test_g_coverage_mean_counts_only_covering_clients() -> None:
    updates = [
        {"w": np.array([0.4, 0.0]), "b": np.array([1.0])},
        {"w": np.array([0.0, 0.0]), "b": np.array([3.0])},
    ]
    masks = [{"w": np.array([True, False])}, {"w": np.array([False, False])}]
    out = coverage_mean(updates, masks)
    np.testing.assert_allclose(out["w"], [0.4, 0.0])
    np.testing.assert_allclose(out["b"], [2.0])


def test_pairwise_jaccard() -> None:
    a = {"w": np.array([1, 1, 0, 0], bool)}
    b = {"w": np.array([0, 1, 1, 0], bool)}
    assert mean_pairwise_jaccard([a, b]) == pytest.approx(1 / 3)
    assert mean_pairwise_jaccard([a, a, a]) == 1.0
