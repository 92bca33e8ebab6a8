"""Local training and evaluation loops, with an optional mask held fixed.

With a mask, weights outside it are zeroed before training, their gradients are zeroed after
every backward pass, and the weights are re-masked after every step, so pruned entries stay
exactly 0 under momentum and weight decay. (LotteryFL's reference code freezes gradients where
``|w| < 1e-6`` instead, bug B3: a kept weight near 0 would freeze too.)
Batches come from a seeded ``torch.Generator``: the same seed gives the same run on CPU. Data,
masks and batches go to the device the model is on (``fedticket.learn.torch_device``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedticket.learn.sgd import PlainSGD
from fedticket.learn.torch_device import model_device, seeded
from fedticket.sparse.masks import Mask


@dataclass(frozen=True)
class TrainStats:
    loss: float  # mean training loss over all batches of all epochs
    num_examples: int
    seconds: float
    mask: Mask | None = None  # the mask at the end (changed only by a step_hook)


@dataclass(frozen=True)
class EvalStats:
    loss: float
    accuracy: float
    num_examples: int


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    mask: Mask | None = None,
    seed: int = 0,
    step_hook: Callable[[int, int, int, Mask | None], Mask | None] | None = None,
) -> TrainStats:
    """SGD for ``epochs`` over shuffled batches (the last partial batch is kept).

    ``step_hook(epoch, batch, batches_per_epoch, mask)`` runs after every step with the current
    mask; a Mask it returns replaces it (sparse dynamic training evolves the mask this way).
    ``TrainStats.mask`` is the mask at the end."""
    start = time.perf_counter()
    device = model_device(model)
    xs, ys = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    generator = torch.Generator().manual_seed(seed)  # batch order: drawn on the CPU everywhere
    optimizer = PlainSGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if mask is not None:
        mask = mask.to(device)
        mask.apply_to_weights(model)
    model.train()
    total, batches = torch.zeros((), dtype=torch.float64, device=device), 0
    with seeded(seed, device):  # dropout draws
        for epoch in range(epochs):
            order = torch.randperm(len(xs), generator=generator).to(device)
            for begin in range(0, len(xs), batch_size):
                batch = order[begin : begin + batch_size]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(xs[batch]), ys[batch])
                loss.backward()
                if mask is not None:
                    mask.apply_to_grads(model)
                optimizer.step()
                if mask is not None:
                    mask.apply_to_weights(model)
                total += loss.detach()  # summed on the device: no host sync per step
                batches += 1
                if step_hook is not None:
                    per_epoch = -(-len(xs) // batch_size)
                    new_mask = step_hook(epoch, begin // batch_size, per_epoch, mask)
                    if new_mask is not None:  # hooks build masks in numpy, on the CPU
                        mask = new_mask.to(device)
                        mask.apply_to_weights(model)
    mean_loss = float(total) / max(batches, 1)
    return TrainStats(mean_loss, len(xs) * epochs, time.perf_counter() - start, mask)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, *, batch_size: int = 500) -> EvalStats:
    """Mean cross-entropy and accuracy; NaN for an empty set (never a fake 0 or 1)."""
    if len(x) == 0:
        return EvalStats(float("nan"), float("nan"), 0)
    model.eval()
    device = model_device(model)
    loss_sum, correct = 0.0, 0
    for begin in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[begin : begin + batch_size]).to(device)
        yb = torch.from_numpy(y[begin : begin + batch_size]).to(device)
        logits = model(xb)
        loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
    return EvalStats(loss_sum / len(x), correct / len(x), len(x))
