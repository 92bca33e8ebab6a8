"""Sparse dynamic training (FLASH's client-side mask evolution), pure numpy on name -> array dicts.

Follows the reference code's trimmed sparselearning library (flash.md section 3): magnitude
prune of each layer's active weights, a regrowth budget redistributed across layers by their mean
active magnitude, random growth, grown weights start at 0.

Deviations from the reference code (spec section 7, bug 8)
----------------------------------------------------------
- Growth turns on exactly g_l off entries chosen uniformly (the code draws Bernoulli(g_l/#off),
  right only in expectation), so a layer's count is exact; just-pruned entries may be re-drawn,
  as in the code, but always restart at 0.
- A layer with no active weights has mean magnitude 0 (the code computes mean(empty) = NaN and
  crashes, bug 9).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fedticket.sparse.masks import Masks


def prune_rate_at(step: int, total_steps: int, initial: float = 0.25) -> float:
    """The linearly decayed prune rate after ``step`` of ``total_steps`` local steps."""
    return initial * max(0.0, 1 - step / total_steps)


def _redistribute(removed: int, shares: dict[str, float], room: dict[str, int]) -> dict[str, int]:
    """g_l = ceil(s_l R) capped at 0.99 room_l; the overflow is spread equally, until it is 0."""
    growth = {n: min(math.ceil(shares[n] * removed), int(0.99 * room[n])) for n in shares}
    for _ in range(100):
        overflow = removed - sum(growth.values())
        open_layers = [n for n in shares if growth[n] < int(0.99 * room[n])]
        if overflow <= 0 or not open_layers:
            break
        each = math.ceil(overflow / len(open_layers))
        for n in open_layers:
            add = min(each, int(0.99 * room[n]) - growth[n], removed - sum(growth.values()))
            growth[n] += max(0, add)
    excess = sum(growth.values()) - removed
    for n in sorted(growth, key=lambda n: -growth[n]):  # ceil can overshoot by a few entries
        if excess <= 0:
            break
        cut = min(excess, growth[n])
        growth[n] -= cut
        excess -= cut
    return growth


def prune_and_regrow(
    weights: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    rate: float,
    rng: np.random.Generator,
) -> Masks:
    """One mask update: drop ceil(rate * nnz_l) smallest-|w| active entries per layer, regrow the
    same total elsewhere by mean-magnitude shares, at random positions. Total count unchanged."""
    pruned: Masks = {}
    removed: dict[str, int] = {}
    magnitude: dict[str, float] = {}
    for name, mask in masks.items():
        flat = np.asarray(mask, bool).reshape(-1).copy()
        values = np.abs(np.asarray(weights[name], dtype=np.float64)).reshape(-1)
        alive = np.flatnonzero(flat)
        magnitude[name] = float(values[alive].mean()) if len(alive) else 0.0
        count = math.ceil(rate * len(alive))
        if count:
            order = np.lexsort((alive, values[alive]))
            flat[alive[order[:count]]] = False
        pruned[name], removed[name] = flat, count
    total_magnitude = sum(magnitude.values())
    shares = {
        n: (magnitude[n] / total_magnitude if total_magnitude else 1 / len(masks)) for n in masks
    }
    room = {n: int((~pruned[n]).sum()) for n in masks}
    growth = _redistribute(sum(removed.values()), shares, room)
    out: Masks = {}
    for name, flat in pruned.items():
        off = np.flatnonzero(~flat)
        if growth[name]:
            flat[rng.choice(off, size=min(growth[name], len(off)), replace=False)] = True
        out[name] = flat.reshape(np.shape(masks[name]))
    return out
