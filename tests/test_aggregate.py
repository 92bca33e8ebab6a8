from __future__ import annotations

import numpy as np
import pytest

from fedticket.sparse.aggregate import masked_mean, weighted_mean


def test_weighted_mean_closed_form() -> None:
    a = {"w": np.array([1.0, 2.0], np.float32), "n": np.array(3)}
    b = {"w": np.array([3.0, 6.0], np.float32), "n": np.array(5)}
    out = weighted_mean([a, b], [1, 3])
    np.testing.assert_array_equal(out["w"], np.array([2.5, 5.0], np.float32))
    assert out["w"].dtype == np.float32
    assert out["n"] == 5  # counters take the max
    np.testing.assert_array_equal(weighted_mean([a, b], [1, 1])["w"], [2.0, 4.0])


@pytest.mark.parametrize(
    ("updates", "weights", "message"),
    [
        ([], [], "at least one"),
        ([{"w": np.zeros(1)}], [1, 2], "weights"),
        ([{"w": np.zeros(1)}, {"v": np.zeros(1)}], [1, 1], "has tensors"),
        ([{"w": np.zeros(1)}], [0], "positive sum"),
    ],
)
def test_weighted_mean_rejects_inconsistent_input(updates, weights, message) -> None:
    with pytest.raises(ValueError, match=message):
        weighted_mean(updates, weights)


def test_masked_mean_matches_the_lotteryfl_spec_case_t4() -> None:
    # masks (1,1,0), values (2,4,0) -> 3; kept by nobody -> previous value 20; biases 1,2,3 -> 2
    values = [
        {"w": np.array([2.0, 5.0], np.float32), "b": np.array([1.0], np.float32)},
        {"w": np.array([4.0, 6.0], np.float32), "b": np.array([2.0], np.float32)},
        {"w": np.array([0.0, 7.0], np.float32), "b": np.array([3.0], np.float32)},
    ]
    masks = [
        {"w": np.array([True, False])},
        {"w": np.array([True, False])},
        {"w": np.array([False, False])},
    ]
    previous = {"w": np.array([9.0, 20.0], np.float32), "b": np.array([0.0], np.float32)}
    out = masked_mean(values, masks, [1, 1, 1], previous)
    np.testing.assert_array_equal(out["w"], [3.0, 20.0])
    np.testing.assert_array_equal(out["b"], [2.0])
    weighted = masked_mean(values, masks, [10, 30, 5], previous)
    assert weighted["w"][0] == 3.5  # (10*2 + 30*4) / 40


def test_masked_mean_without_masks_is_fedavg() -> None:
    a = {"w": np.array([1.0, 2.0], np.float32)}
    b = {"w": np.array([3.0, 6.0], np.float32)}
    out = masked_mean([a, b], [None, None], [1, 3], {"w": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(out["w"], weighted_mean([a, b], [1, 3])["w"])
