"""Consensus-mask maths of FLASH / hetero-FLASH (server side, pure numpy).

Implementation based on Babakniya et al., "Revisiting Sparsity Hunting in Federated Learning:
Why Does Sparsity Consensus Matter?", TMLR 2023, and its reference code (SaraBabakN/flash_fl);
see ../shared/algorithms/flash.md sections 1, 3 and 4. Masks and tensors are name -> array dicts
over the sparse tensors only.

Deviations from the reference code (spec section 7)
---------------------------------------------------
- Stage-1 masks have exact per-layer counts round(d'_l * N_l) at random positions instead of a
  Bernoulli(d'_l) draw (bug 7: the code's total is only about d).
- ``rescale_layer_densities`` can hand the excess of layers capped at density 1 to the other
  layers (``redistribute=True``); the default keeps the code's rule (no redistribution).
- Top-k matches the code, including its floor per layer and its choice of zero-valued entries
  when a budget exceeds a layer's non-zeros (bug 6); ties are broken by index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedticket.sparse.masks import Masks


def rescale_layer_densities(
    mean_densities: Mapping[str, float],
    sizes: Mapping[str, int],
    density: float,
    *,
    redistribute: bool = False,
) -> dict[str, float]:
    """Stage 1: scale the clients' average layer densities so that the model has ``density``
    overall, capping each layer at 1 (spec 1.5: ratio = d N / sum_l dbar_l N_l)."""
    total = sum(sizes.values())
    kept = sum(mean_densities[name] * sizes[name] for name in sizes)
    if kept <= 0:
        return {name: density for name in sizes}
    ratio = density * total / kept
    scaled = {name: min(1.0, mean_densities[name] * ratio) for name in sizes}
    if redistribute:
        for _ in range(len(sizes)):
            capped = {n for n, v in scaled.items() if v >= 1.0}
            free = [n for n in sizes if n not in capped and scaled[n] > 0]
            missing = density * total - sum(scaled[n] * sizes[n] for n in sizes)
            if missing <= 1e-9 or not free:
                break
            room = sum(scaled[n] * sizes[n] for n in free)
            scaled |= {n: min(1.0, scaled[n] * (1 + missing / room)) for n in free}
    return scaled


def random_masks(
    shapes: Mapping[str, tuple[int, ...]], densities: Mapping[str, float], rng: np.random.Generator
) -> Masks:
    """Masks with exactly round(d_l * N_l) kept entries per layer, at random positions."""
    masks = {}
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        keep = min(size, round(densities[name] * size))
        flat = np.zeros(size, bool)
        flat[rng.choice(size, size=keep, replace=False)] = True
        masks[name] = flat.reshape(shape)
    return masks


def layer_budgets(
    sizes: Mapping[str, int],
    density: float,
    *,
    client_masks: Sequence[Mapping[str, np.ndarray]] | None = None,
    aggregate: Mapping[str, np.ndarray] | None = None,
) -> dict[str, int]:
    """Per-layer kept counts of the consensus mask (spec 3.6).

    The budget source is either the clients' average layer counts (``client_masks``, the code's
    'avg') or the aggregate's non-zeros (``aggregate``, 'aggregate'); it is scaled by
    min(1, d N / sum_l b_l) and floored per layer, as in the reference code."""
    if (client_masks is None) == (aggregate is None):
        raise ValueError("give exactly one budget source: client_masks or aggregate")
    if client_masks is not None:
        if not client_masks:
            raise ValueError("client_masks is empty")
        base = {n: float(np.mean([np.count_nonzero(m[n]) for m in client_masks])) for n in sizes}
    else:
        base = {n: float(np.count_nonzero(aggregate[n])) for n in sizes}
    total = sum(base.values())
    ratio = min(1.0, density * sum(sizes.values()) / total) if total else 0.0
    return {n: int(base[n] * ratio) for n in sizes}


def kept_budgets(sizes: Mapping[str, int], density: float) -> dict[str, int]:
    """Per layer, the entries a mask of ``density`` keeps: round(density x size), at least one
    (Fed-LTP's sub-models, Itahara's tickets)."""
    return {name: max(1, min(size, round(density * size))) for name, size in sizes.items()}


def top_k_masks(aggregate: Mapping[str, np.ndarray], budgets: Mapping[str, int]) -> Masks:
    """Per layer, the ``budgets[l]`` entries of largest |aggregate| (ties: lower index)."""
    masks = {}
    for name, k in budgets.items():
        values = np.abs(np.asarray(aggregate[name], dtype=np.float64)).reshape(-1)
        flat = np.zeros(values.size, bool)
        if k > 0:
            order = np.lexsort((np.arange(values.size), -values))
            flat[order[:k]] = True
        masks[name] = flat.reshape(np.shape(aggregate[name]))
    return masks


def nested_masks(
    aggregate: Mapping[str, np.ndarray], sizes: Mapping[str, int], levels: Sequence[float]
) -> dict[float, Masks]:
    """hetero-FLASH: one top-k mask per density level, budgets from the aggregate's non-zeros.
    Larger levels keep a superset of smaller ones (spec 4, test C)."""
    return {
        level: top_k_masks(aggregate, layer_budgets(sizes, level, aggregate=aggregate))
        for level in sorted(levels)
    }


def pairwise_jaccard(masks: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
    """Matrix of Jaccard overlaps |a & b| / |a | b| between masks (all layers pooled; two
    empty masks count as identical)."""
    flat = np.stack(
        [np.concatenate([np.asarray(m[n], bool).reshape(-1) for n in sorted(m)]) for m in masks]
    ).astype(np.float64)  # exact counts up to 2**53 entries
    inter = flat @ flat.T
    sizes = flat.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0)


def mean_pairwise_jaccard(masks: Sequence[Mapping[str, np.ndarray]]) -> float:
    """Mean Jaccard overlap over all pairs of masks (all layers pooled)."""
    if len(masks) < 2:
        return float("nan")
    matrix = pairwise_jaccard(masks)
    return float(matrix[np.triu_indices(len(masks), k=1)].mean())
