"""Aggregation maths shared by the strategies (pure numpy): plain, keeper (masked) and coverage
means, and server momentum."""

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


def masked_mean(
    updates: Sequence[Mapping[str, np.ndarray]],
    masks: Sequence[Mapping[str, np.ndarray] | None],
    weights: Sequence[float],
    previous: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Per-entry weighted mean over the clients whose mask keeps the entry.

    An entry that no client keeps keeps its ``previous`` (global) value (LotteryFL's rule,
    spec A1-A2); a tensor without a mask counts as fully kept, so with no masks at all this is
    FedAvg's weighted mean. Integer tensors take the largest value.
    """
    if not updates:
        raise ValueError("masked_mean needs at least one update")
    if not len(updates) == len(masks) == len(weights):
        raise ValueError(f"{len(updates)} updates, {len(masks)} masks, {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    result = {}
    for name, old in previous.items():
        stack = [u[name] for u in updates]
        if not np.issubdtype(old.dtype, np.floating):
            result[name] = np.max(np.stack(stack), axis=0)
            continue
        total = np.zeros(old.shape, np.float64)
        weight = np.zeros(old.shape, np.float64)
        for wi, values, mask in zip(w, stack, masks, strict=True):
            keep = mask.get(name) if mask else None
            if keep is None:
                total += wi * values
                weight += wi
            else:
                total += wi * np.where(keep, values, 0.0)
                weight += wi * keep
        kept = weight > 0
        merged = np.where(kept, total / np.where(kept, weight, 1.0), old)
        result[name] = merged.astype(old.dtype)
    return result


def server_momentum(
    previous: Mapping[str, np.ndarray],
    mean: Mapping[str, np.ndarray],
    velocity: Mapping[str, np.ndarray],
    kept: Mapping[str, np.ndarray],
    beta: float,
    lr: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One FedAvgM server step (Hsu et al. 2019, Flower's sign convention) on the aggregate:
    delta = previous - mean, v <- beta * v + delta, theta <- previous - lr * v.

    Entries nobody kept this round (``kept`` False) keep both theta and v (FedLTN's choice,
    spec 1.4: letting v coast would move weights no client trained). A missing velocity is 0,
    so round 1 is FedAvg's step when lr = 1. Integer tensors take ``mean`` as they are.
    Returns (theta, velocity)."""
    theta, new_velocity = {}, {}
    for name, old in previous.items():
        if not np.issubdtype(old.dtype, np.floating):
            theta[name] = np.asarray(mean[name])
            continue
        old64 = old.astype(np.float64)
        v_old = np.asarray(velocity.get(name, np.zeros(old.shape)), np.float64)
        keep = np.asarray(kept.get(name, True), bool)
        v = np.where(keep, beta * v_old + (old64 - mean[name]), v_old)
        theta[name] = np.where(keep, old64 - lr * v, old64).astype(old.dtype)
        new_velocity[name] = v
    return theta, new_velocity


def coverage_mean(
    updates: Sequence[Mapping[str, np.ndarray]],
    masks: Sequence[Mapping[str, np.ndarray]],
    weights: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """FLASH's mask-aware mean ("FMA", update_mode 1): per entry, the weighted sum of the client
    values over the weight of the clients whose mask covers it, 0 where none does (spec test G).
    Tensors without masks are (weighted) plain means; integer tensors take the largest value."""
    w = np.ones(len(updates)) if weights is None else np.asarray(weights, dtype=np.float64)
    result = {}
    for name in updates[0]:
        first = np.asarray(updates[0][name])
        if not np.issubdtype(first.dtype, np.floating):
            result[name] = np.max(np.stack([u[name] for u in updates]), axis=0)
            continue
        stack = np.stack([np.asarray(u[name], dtype=np.float64) for u in updates])
        shape = (-1,) + (1,) * first.ndim
        if all(m and name in m for m in masks):
            cover = np.stack([m[name] for m in masks]).astype(np.float64) * w.reshape(shape)
            total = cover.sum(axis=0)
            mean = np.where(
                total > 0, (stack * cover).sum(axis=0) / np.where(total > 0, total, 1), 0.0
            )
        else:
            mean = (stack * w.reshape(shape)).sum(axis=0) / w.sum()
        result[name] = mean.astype(first.dtype)
    return result
