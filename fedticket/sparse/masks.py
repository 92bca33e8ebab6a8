"""Masks: which entries of a model's prunable tensors are kept.

A ``Mask`` maps a parameter name to a bool tensor of that parameter's shape. Only conv and
linear weights are prunable (biases and BatchNorm never are): layers are picked by module type,
not by the substring "weight" (that would catch BatchNorm's gamma, LotteryFL bug B14).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import torch
from torch import nn

#: the wire and aggregation form of a mask: tensor name -> bool array of the tensor's shape;
#: ``None`` (never ``{}``) where a client trains dense
Masks = dict[str, np.ndarray]

PRUNABLE_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_names(model: nn.Module) -> list[str]:
    """Names of the conv and linear weights, in ``state_dict`` order."""
    return [
        f"{module_name}.weight" if module_name else "weight"
        for module_name, module in model.named_modules()
        if isinstance(module, PRUNABLE_MODULES)
    ]


def select_layers(model: nn.Module, rule: str = "all") -> list[str]:
    """The prunable weights a run's masks cover: ``all`` conv/linear weights, ``middle`` (all
    but the first and the last, FLASH's MNIST key file) or ``conv`` (convolutions only)."""
    names = prunable_names(model)
    if rule == "middle":
        return names[1:-1]
    if rule == "conv":
        modules = dict(model.named_modules())
        return [
            n
            for n in names
            if isinstance(
                modules[n.rsplit(".", 1)[0] if "." in n else ""], nn.Conv1d | nn.Conv2d | nn.Conv3d
            )
        ]
    if rule != "all":
        raise ValueError(f"unknown layer rule {rule!r}; use all, middle or conv")
    return names


class Mask(dict[str, torch.Tensor]):
    """Parameter name -> bool tensor (True = kept)."""

    @classmethod
    def ones_like(cls, model: nn.Module) -> Mask:
        params = dict(model.named_parameters())
        return cls(
            {
                name: torch.ones_like(params[name], dtype=torch.bool)
                for name in prunable_names(model)
            }
        )

    @property
    def num_kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.values()))

    @property
    def num_total(self) -> int:
        return int(sum(m.numel() for m in self.values()))

    def density(self) -> float:
        """Kept share of the prunable entries (1.0 for an empty mask)."""
        return self.num_kept / self.num_total if self.num_total else 1.0

    def layer_densities(self) -> dict[str, float]:
        return {name: float(m.float().mean()) for name, m in self.items()}

    def to(self, device: torch.device) -> Mask:
        """The mask on ``device`` (itself when it is there already)."""
        if all(m.device == device for m in self.values()):
            return self
        return Mask({name: m.to(device) for name, m in self.items()})

    @torch.no_grad()
    def apply_to_weights(self, model: nn.Module) -> None:
        """Zero the weights outside the mask."""
        params = dict(model.named_parameters())
        for name, keep in self.items():
            params[name].mul_(keep)

    @torch.no_grad()
    def apply_to_grads(self, model: nn.Module) -> None:
        """Zero the gradients outside the mask (so the optimizer cannot revive them)."""
        params = dict(model.named_parameters())
        for name, keep in self.items():
            if params[name].grad is not None:
                params[name].grad.mul_(keep)

    @classmethod
    def from_numpy(cls, masks: Mapping[str, np.ndarray]) -> Mask:
        return cls(
            {name: torch.from_numpy(np.asarray(m, bool).copy()) for name, m in masks.items()}
        )

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {name: m.detach().cpu().numpy().astype(bool) for name, m in self.items()}

    def digest(self) -> str:
        return mask_digest(self.to_numpy())


def mask_digest(masks: Mapping[str, np.ndarray] | None) -> str:
    """SHA-256 (first 16 hex) over names, shapes and packed bits: equal digests mean equal
    masks. The empty string stands for "no mask" (every entry kept, nothing to cache)."""
    if not masks:
        return ""
    h = hashlib.sha256()
    for name in sorted(masks):
        mask = np.asarray(masks[name], bool)
        h.update(name.encode())
        h.update(str(mask.shape).encode())
        h.update(np.packbits(mask.reshape(-1)).tobytes())
    return h.hexdigest()[:16]


def prune_count(alive: int, rate: float) -> int:
    """Entries one LotteryFL step removes from a layer with ``alive`` kept entries:
    ceil(rate * (alive - 1)), what numpy's percentile threshold removes on distinct
    magnitudes in the reference code (spec T1), in exact arithmetic so that 0.2 * 15 is 3."""
    if alive <= 1:
        return 0
    return math.ceil(Fraction(str(rate)) * (alive - 1))


def prune_by_magnitude(
    weights: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], rate: float
) -> dict[str, np.ndarray]:
    """LotteryFL's step: per layer, drop the ``prune_count`` kept entries of smallest |weight|.
    Returns new masks; the inputs are not changed."""
    counts = {name: prune_count(int(np.count_nonzero(m)), rate) for name, m in masks.items()}
    return prune_smallest(weights, masks, counts)


def prune_smallest(
    weights: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    counts: Mapping[str, int],
) -> dict[str, np.ndarray]:
    """Per layer, drop ``counts[name]`` kept entries of smallest |weight| (ties: lower index
    first; a layer missing from ``counts`` is unchanged). Returns new masks."""
    pruned = {}
    for name, mask in masks.items():
        flat = np.asarray(mask, bool).reshape(-1).copy()
        alive = np.flatnonzero(flat)
        count = min(int(counts.get(name, 0)), len(alive))
        if count > 0:
            magnitudes = np.abs(np.asarray(weights[name]).reshape(-1)[alive])
            order = np.lexsort((alive, magnitudes))  # by magnitude, then index
            flat[alive[order[:count]]] = False
        pruned[name] = flat.reshape(mask.shape)
    return pruned


def top_k_among(
    scores: Mapping[str, np.ndarray],
    allowed: Mapping[str, np.ndarray],
    counts: Mapping[str, int],
) -> dict[str, np.ndarray]:
    """Per layer, keep the ``counts[name]`` allowed entries of largest |score| (ties: lower
    index first); entries outside ``allowed`` are never kept."""
    keep = {}
    for name, mask in allowed.items():
        allowed_flat = np.asarray(mask, bool).reshape(-1)
        drop = int(allowed_flat.sum()) - int(counts[name])
        keep[name] = prune_smallest(scores, {name: mask}, {name: max(drop, 0)})[name]
    return keep


def apply_masks(
    tensors: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Copies of ``tensors`` with the entries outside ``masks`` set to 0 (unmasked tensors
    copied as they are): LotteryFL's rewind target, FedLTN's post-pruned model. Values are
    copied, never aliased (LotteryFL bug B1)."""
    return {
        name: np.where(masks[name], values, 0).astype(values.dtype)
        if name in masks
        else values.copy()
        for name, values in tensors.items()
    }


def kept_share(masks: Mapping[str, np.ndarray] | None) -> float:
    """Kept share of the masked entries over all tensors (1.0 without a mask)."""
    if not masks:
        return 1.0
    return sum(int(m.sum()) for m in masks.values()) / sum(m.size for m in masks.values())


def ones_masks(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """All-kept masks for the named tensors."""
    return {name: np.ones(shape, bool) for name, shape in shapes.items()}
