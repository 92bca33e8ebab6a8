"""Aggregation maths shared by the strategies (pure numpy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def weighted_mean(
    updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]
) -> dict[str, np.ndarray]:
    """Per-tensor weighted mean of client states (FedAvg).

    Float tensors are averaged in float64 and cast back; integer tensors (BatchNorm's
    ``num_batches_tracked``) take the largest value, since a mean of counters means nothing.
    """
    if not updates:
        raise ValueError("weighted_mean needs at least one update")
    if len(weights) != len(updates):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    w = w / w.sum()
    names = list(updates[0])
    for i, update in enumerate(updates[1:], start=1):
        if list(update) != names:
            raise ValueError(
                f"update {i} has tensors {sorted(update)} but update 0 has {sorted(names)}"
            )
    result = {}
    for name in names:
        stack = [u[name] for u in updates]
        if np.issubdtype(stack[0].dtype, np.floating):
            mean = sum(wi * t.astype(np.float64) for wi, t in zip(w, stack, strict=True))
            result[name] = np.asarray(mean, dtype=stack[0].dtype)
        else:
            result[name] = np.max(np.stack(stack), axis=0)
    return result
