"""DP-SGD under a mask (fedticket.learn.dp_train): every example's clipped gradient is bounded,
the noise has the configured scale and touches only kept coordinates, training keeps the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedticket.config import RunConfig
from fedticket.learn.data import client_data
from fedticket.learn.dp_train import private_gradients, train_private
from fedticket.learn.models import build_model
from fedticket.sparse.masks import Mask


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(50, 10)


def _batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(n, 50)).astype(np.float32)) * 10
    return x, torch.from_numpy(rng.integers(0, 10, n))


@pytest.mark.parametrize("clip", [1e-3, 0.5, 1e6])
def test_each_examples_clipped_gradient_is_at_most_the_clip(clip) -> None:
    model, (x, y) = _linear(), _batch(1)
    gradients, norms = private_gradients(
        model, x, y, clip=clip, noise_multiplier=0.0, expected_batch=1.0, mask=None,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    norm = float(torch.sqrt(sum(g.pow(2).sum() for g in gradients.values())))
    assert norm == pytest.approx(min(clip, float(norms[0])), rel=1e-5)
    # a batch of 16: the sum of 16 clipped gradients, divided by 16, is at most the clip
    x16, y16 = _batch(16, seed=1)
    gradients, _ = private_gradients(
        model, x16, y16, clip=clip, noise_multiplier=0.0, expected_batch=16.0, mask=None,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert float(torch.sqrt(sum(g.pow(2).sum() for g in gradients.values()))) <= clip * (1 + 1e-5)


def test_the_noise_has_std_sigma_clip_over_the_batch_and_spares_pruned_weights() -> None:
    model, (x, y) = _linear(), _batch(8)
    keep = torch.rand(10, 50, generator=torch.Generator().manual_seed(3)) < 0.3
    mask = Mask({"weight": keep})
    sigma, clip, batch = 1.4, 2.0, 8.0

    def run(noise: float) -> dict[str, torch.Tensor]:
        return private_gradients(
            model, x, y, clip=clip, noise_multiplier=noise, expected_batch=batch, mask=mask,
            generator=torch.Generator().manual_seed(7),
        )[0]  # fmt: skip

    noisy, clean = run(sigma), run(0.0)
    noise = (noisy["weight"] - clean["weight"]) * batch
    assert torch.count_nonzero(noise[~keep]) == 0  # no noise (and no gradient) outside the mask
    assert torch.count_nonzero(noisy["weight"][~keep]) == 0
    kept = noise[keep].double()
    # the sample std of n Gaussian draws: (n - 1) s^2 / sigma^2 ~ chi-square(n - 1); 4 sd bounds
    n, expected = kept.numel(), sigma * clip
    s2 = float(kept.var())
    sd = (2 / (n - 1)) ** 0.5
    assert abs(s2 / expected**2 - 1) < 4 * sd, (s2**0.5, expected)
    bias = (noisy["bias"] - clean["bias"]) * batch  # unmasked tensors get noise everywhere
    assert torch.count_nonzero(bias) == bias.numel()


def test_training_keeps_the_mask_and_refuses_batchnorm() -> None:
    config = RunConfig.from_run_config({"partitioner": "iid"})
    data = client_data(config, 0, 10)
    model = build_model("mnist-cnn", (1, 28, 28), 10, seed=0)
    name = "conv2.weight"
    keep = torch.rand(dict(model.named_parameters())[name].shape) < 0.5
    stats = train_private(
        model, data.x_train, data.y_train, steps=3, sample_rate=0.1, clip=1.0,
        noise_multiplier=1.0, lr=0.05, momentum=0.5, mask=Mask({name: keep}), seed=1,
    )  # fmt: skip
    weight = dict(model.named_parameters())[name].detach()
    assert torch.count_nonzero(weight[~keep]) == 0 and torch.count_nonzero(weight[keep]) > 0
    assert stats.steps == 3 and stats.examples > 0 and 0 <= stats.clipped_share <= 1
    bn = build_model("mnist-cnn-bn", (1, 28, 28), 10, seed=0)
    with pytest.raises(ValueError, match="BatchNorm"):
        train_private(
            bn, data.x_train, data.y_train, steps=1, sample_rate=0.1, clip=1.0,
            noise_multiplier=1.0, lr=0.05,
        )  # fmt: skip
