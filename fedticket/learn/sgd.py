"""SGD with momentum and weight decay, step for step what ``torch.optim.SGD`` computes on the
CPU (its single-tensor path: no dampening, no Nesterov), without ``torch.optim``.

Why: ``torch.optim.Optimizer`` imports torch's compiler stack (``torch._dynamo``) the first time
a parameter group is added, 0.86 s on a 2-core machine, and a deployed ClientApp is a fresh
process for every message (Flower 1.39), so every train message paid it (issue #24).
``benchmarks.identity`` checks that runs stay bit for bit what they were under torch's SGD.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class PlainSGD:
    """``torch.optim.SGD(params, lr, momentum, weight_decay)``'s arithmetic: per parameter with
    a gradient, g = grad + weight_decay * p; buf = g on the first step, else
    buf = momentum * buf + g; p -= lr * (buf if momentum else g)."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"lr, momentum and weight_decay must be >= 0: {lr}, {momentum}, {weight_decay}"
            )
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, param in enumerate(self.params):
            if param.grad is None:
                continue
            grad = param.grad
            if self.weight_decay != 0:
                grad = grad.add(param, alpha=self.weight_decay)
            if self.momentum != 0:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = torch.clone(grad).detach()
                else:
                    buf.mul_(self.momentum).add_(grad)
                grad = buf
            param.add_(grad, alpha=-self.lr)
