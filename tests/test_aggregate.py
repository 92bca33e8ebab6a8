from __future__ import annotations

import numpy as np
import pytest

from fedticket.aggregate import weighted_mean


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
