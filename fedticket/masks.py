"""Masks: which entries of a model's prunable tensors are kept.

A ``Mask`` maps a parameter name to a bool tensor of that parameter's shape. Only conv and
linear weights are prunable (biases and BatchNorm never are): layers are picked by module type,
not by the substring "weight" (that would catch BatchNorm's gamma, LotteryFL bug B14).
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

PRUNABLE_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_names(model: nn.Module) -> list[str]:
    """Names of the conv and linear weights, in ``state_dict`` order."""
    return [
        f"{module_name}.weight" if module_name else "weight"
        for module_name, module in model.named_modules()
        if isinstance(module, PRUNABLE_MODULES)
    ]


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

    def digest(self) -> str:
        """SHA-256 over names, shapes and packed bits: equal digests mean equal masks."""
        h = hashlib.sha256()
        for name in sorted(self):
            bits = self[name].detach().cpu().contiguous().flatten().numpy()
            h.update(name.encode())
            h.update(str(tuple(self[name].shape)).encode())
            h.update(bits.tobytes())
        return h.hexdigest()
