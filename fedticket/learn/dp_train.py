"""DP-SGD under a fixed mask: the noisy step Fed-LTP's clients take (Shi et al., arXiv
2305.01387, Algorithm 2 lines 12-17; docs/algorithms/fedltp.md section 1.3), on the standard
recipe of Abadi et al. (CCS 2016).

Each step: a Poisson-sampled batch (every record joins with probability ``sample_rate``, what
the accountant in ``fedticket.privacy.accounting`` assumes); per-example gradients
(``torch.func``: ``vmap`` of ``grad``), each clipped to L2 norm ``clip`` over the kept
coordinates; their sum plus Gaussian noise of std ``noise_multiplier x clip`` on every kept
coordinate (none outside the mask: pruned weights are not released); divided by the expected
batch size; then SGD with momentum, the weights re-masked. Deviation from the paper: it clips
the mini-batch gradient, which bounds no single record's influence; per-example clipping is
what its own accounting needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedticket.learn.torch_device import model_device, seeded
from fedticket.sparse.masks import Mask


@dataclass(frozen=True)
class PrivateStats:
    """What a run of private steps did: steps, records seen, the share of per-example
    gradients the clip shortened, and seconds."""

    steps: int
    examples: int
    clipped_share: float
    seconds: float


def private_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    clip: float,
    noise_multiplier: float,
    expected_batch: float,
    mask: Mask | None,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The noisy mean gradient of one batch by parameter name, and each example's gradient
    norm before clipping (over the kept coordinates)."""
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss_of_one(values: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor):
        out = functional_call(model, values, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    per_example = vmap(grad(loss_of_one), in_dims=(None, 0, 0), randomness="different")(
        params, x, y
    )
    if mask is not None:
        per_example = {
            name: g * mask[name] if name in mask else g for name, g in per_example.items()
        }
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in per_example.values()))
    scale = torch.clamp(clip / (norms + 1e-12), max=1.0)
    noisy = {}
    for name, g in per_example.items():
        summed = (g * scale.view(-1, *([1] * (g.dim() - 1)))).sum(0)
        noise = _noise(summed.shape, noise_multiplier * clip, generator, mask, name)
        noisy[name] = (summed + noise.to(summed.device)) / expected_batch
    return noisy, norms


def train_private(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    steps: int,
    sample_rate: float,
    clip: float,
    noise_multiplier: float,
    lr: float,
    momentum: float = 0.0,
    mask: Mask | None = None,
    seed: int = 0,
) -> PrivateStats:
    """``steps`` DP-SGD steps on ``model`` in place (see the module docstring)."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError("DP-SGD needs per-example gradients: a BatchNorm model mixes examples")
    start = time.perf_counter()
    device = model_device(model)
    xs, ys = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    generator = torch.Generator().manual_seed(seed)  # sampling and noise: on the CPU everywhere
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    if mask is not None:
        mask = mask.to(device)
        mask.apply_to_weights(model)
    model.train()
    params = dict(model.named_parameters())
    expected = sample_rate * len(xs)
    clipped = seen = 0
    with seeded(seed, device):  # dropout draws inside vmap
        for _ in range(steps):
            batch = torch.nonzero(torch.rand(len(xs), generator=generator) < sample_rate)
            batch = batch.flatten().to(device)
            optimizer.zero_grad(set_to_none=True)
            if len(batch):
                gradients, norms = private_gradients(
                    model,
                    xs[batch],
                    ys[batch],
                    clip=clip,
                    noise_multiplier=noise_multiplier,
                    expected_batch=expected,
                    mask=mask,
                    generator=generator,
                )
                clipped, seen = clipped + int((norms > clip).sum()), seen + len(batch)
            else:  # an empty Poisson batch still releases noise
                gradients = {
                    name: _noise(p.shape, noise_multiplier * clip, generator, mask, name)
                    .to(device)
                    .div_(expected)
                    for name, p in params.items()
                }
            for name, p in params.items():
                p.grad = gradients[name].to(p.dtype)
            optimizer.step()
            if mask is not None:
                mask.apply_to_weights(model)
    return PrivateStats(steps, seen, clipped / seen if seen else 0.0, time.perf_counter() - start)


def _noise(
    shape: torch.Size, std: float, generator: torch.Generator, mask: Mask | None, name: str
) -> torch.Tensor:
    """Gaussian noise of ``std``, zero outside the mask (pruned weights are not released)."""
    noise = torch.normal(0.0, std, tuple(shape), generator=generator)
    if mask is not None and name in mask:
        noise = noise * mask[name].cpu()
    return noise
