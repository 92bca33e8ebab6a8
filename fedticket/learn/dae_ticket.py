"""Itahara et al.'s ticket (arXiv 2004.09817; docs/algorithms/itahara.md section 1): the
classifier trained as a denoising autoencoder on unlabeled data, then pruned by magnitude.

The encoder is the classifier without its last linear layer (the head); a linear decoder from
the head's input back to the pixels is trained with it and then dropped. Inputs are corrupted by
Gaussian noise of std ``corruption``; the loss is the mean squared error to the clean input;
Adam. Each sparse layer then keeps its ``density`` largest magnitudes (top-k per layer, ties to
the lower index). The head is not trained by the autoencoder: it keeps its init, and where it is
a sparse layer its mask is by the init's magnitudes. All three choices are ours (the paper's
text could not be read: only its abstract).

The baselines of the same harness: ``magnitude``, the top-k of the random init itself, and
``random``, a seeded random mask with the same per-layer counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fedticket.learn.models import model_for, state_arrays
from fedticket.learn.torch_device import seeded
from fedticket.sparse.consensus import kept_budgets, top_k_masks
from fedticket.sparse.masks import Masks, apply_masks

if TYPE_CHECKING:
    from fedticket.config import RunConfig


@dataclass(frozen=True)
class Ticket:
    """A sparse starting point: the weights under the mask, the mask, its source, and the
    pre-training's reconstruction loss per epoch (empty for the baselines)."""

    weights: dict[str, np.ndarray]
    mask: Masks
    source: str
    losses: list[float]


def head_of(model: nn.Module) -> nn.Linear:
    """The classifier's last linear layer (the part the autoencoder does not train)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no linear head to split an encoder from")
    return linears[-1]


def pretrain_autoencoder(
    model: nn.Module,
    x: np.ndarray,
    *,
    corruption: float,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> list[float]:
    """Train ``model`` minus its head as a denoising autoencoder on ``x`` (in place); the mean
    reconstruction loss of each epoch."""
    head = head_of(model)
    features: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, inputs, _out: features.append(inputs[0]))
    generator = torch.Generator().manual_seed(seed)
    with seeded(seed, torch.device("cpu")):
        decoder = nn.Linear(head.in_features, int(np.prod(x.shape[1:])))
    in_head = {id(p) for p in head.parameters()}
    encoder = [p for p in model.parameters() if id(p) not in in_head]
    optimizer = torch.optim.Adam([*encoder, *decoder.parameters()], lr=lr)
    clean = torch.from_numpy(x)
    losses = []
    model.train()
    try:
        with seeded(seed, torch.device("cpu")):
            for _epoch in range(epochs):
                order = torch.randperm(len(clean), generator=generator)
                total, batches = 0.0, 0
                for begin in range(0, len(clean), batch_size):
                    batch = clean[order[begin : begin + batch_size]]
                    noise = torch.randn(batch.shape, generator=generator) * corruption
                    features.clear()
                    model(batch + noise)
                    loss = nn.functional.mse_loss(decoder(features[0]), batch.flatten(1))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total, batches = total + float(loss.detach()), batches + 1
                losses.append(total / max(batches, 1))
    finally:
        hook.remove()
    return losses


def make_ticket(
    config: RunConfig,
    prunable: list[str],
    source: str,
    density: float,
    *,
    unlabeled: np.ndarray | None = None,
    weights: str = "pretrained",
    corruption: float = 0.5,
    epochs: int = 10,
    lr: float = 1e-3,
) -> Ticket:
    """The ticket of ``source`` (``dae``, ``magnitude`` or ``random``) at ``density`` per
    sparse layer, from the run seed's init theta_0 (what every client builds too)."""
    model = model_for(config)
    init = state_arrays(model)
    sizes = {name: init[name].size for name in prunable}
    budgets = kept_budgets(sizes, density)
    losses: list[float] = []
    trained = init
    if source == "dae":
        if unlabeled is None or not len(unlabeled):
            raise ValueError("the autoencoder needs unlabeled data")
        losses = pretrain_autoencoder(
            model,
            unlabeled,
            corruption=corruption,
            epochs=epochs,
            batch_size=config.batch_size,
            lr=lr,
            seed=config.seed,
        )
        trained = state_arrays(model)
        ranking = {name: trained[name] for name in prunable}
    elif source == "magnitude":
        ranking = {name: init[name] for name in prunable}
    elif source == "random":
        rng = np.random.default_rng([config.seed, 0x7A4D])
        ranking = {name: rng.random(init[name].shape) for name in prunable}
    else:
        raise ValueError(f"unknown ticket source {source!r}; use dae, magnitude or random")
    mask = top_k_masks(ranking, budgets)
    start = trained if weights == "pretrained" else init
    return Ticket(apply_masks(start, mask), mask, source, losses)
