"""Model registry: the papers' networks, built for a dataset's input shape and class count.

All models return logits; training uses cross-entropy. (The LotteryFL reference models end in
``log_softmax`` and train with NLL, which is the same loss.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fedticket.registry import MODELS

if TYPE_CHECKING:
    from fedticket.config import RunConfig


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[tuple[int, int, int], int], nn.Module]
    input_shapes: frozenset[tuple[int, int, int]] | None  # None: any input shape
    description: str

    def accepts(self, input_shape: tuple[int, int, int]) -> bool:
        return self.input_shapes is None or tuple(input_shape) in self.input_shapes


def register_model(
    name: str, *, input_shapes: set[tuple[int, int, int]] | None = None, description: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        shapes = frozenset(input_shapes) if input_shapes is not None else None
        MODELS.add(name, ModelSpec(name, build, shapes, description))
        return build

    return wrap


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, seed: int
) -> nn.Module:
    """Build a registered model with weights drawn from ``seed`` (the shared theta_0)."""
    spec = MODELS[name]
    if not spec.accepts(input_shape):
        raise ValueError(f"model '{name}' does not take inputs of shape {input_shape}")
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # built on the CPU; GPU generators untouched
        return spec.build(input_shape, num_classes)


def model_for(config: RunConfig, seed: int | None = None) -> nn.Module:
    """The run's model for its dataset, initialised from ``seed`` (default: the run's seed,
    the theta_0 every client and the server share)."""
    from fedticket.learn.data import DATASETS  # data -> models would be the natural order

    spec = DATASETS[config.dataset]
    return build_model(
        config.model, spec.input_shape, spec.num_classes, config.seed if seed is None else seed
    )


class MnistCNN(nn.Module):
    """LotteryFL's 2-conv MNIST CNN (reference ``CNNMnist``): 21,840 parameters."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(nn.functional.max_pool2d(self.conv1(x), 2))
        x = torch.relu(nn.functional.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = self.drop(torch.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


@register_model(
    "mnist-cnn", input_shapes={(1, 28, 28)}, description="LotteryFL's MNIST CNN, 21,840 params"
)
def _mnist_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return MnistCNN(num_classes)


class MnistCNNBN(MnistCNN):
    """LotteryFL's MNIST CNN with BatchNorm after both convolutions and the first linear layer
    (22,000 parameters): the small BN network FedLTN's local batch-norm needs on MNIST."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.bn1 = nn.BatchNorm2d(10)
        self.bn2 = nn.BatchNorm2d(20)
        self.bn3 = nn.BatchNorm1d(50)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(nn.functional.max_pool2d(self.bn1(self.conv1(x)), 2))
        x = torch.relu(nn.functional.max_pool2d(self.conv2_drop(self.bn2(self.conv2(x))), 2))
        x = self.drop(torch.relu(self.bn3(self.fc1(x.flatten(1)))))
        return self.fc2(x)


@register_model(
    "mnist-cnn-bn",
    input_shapes={(1, 28, 28)},
    description="LotteryFL's MNIST CNN with BatchNorm, 22,000 params",
)
def _mnist_cnn_bn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return MnistCNNBN(num_classes)


class LeNet5(nn.Module):
    """LeNet-5 as LotteryFL's CIFAR-10 model (reference ``CNNCifar``): 62,006 parameters."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


@register_model(
    "lenet5", input_shapes={(3, 32, 32)}, description="LeNet-5 (LotteryFL CIFAR-10), 62,006 params"
)
def _lenet5(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return LeNet5(num_classes)


class VGGSmallBN(nn.Module):
    """A small VGG-style CNN with BatchNorm (FedLTN and FLASH train BN networks).

    Two conv blocks of two 3x3 conv-BN-ReLU layers (32 and 64 channels), then global average
    pooling and one linear layer, so it fits any input size.
    """

    def __init__(
        self, in_channels: int, num_classes: int, widths: tuple[int, int] = (32, 64)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            for _ in range(2):
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


@register_model("vgg-bn", description="small VGG-style CNN with BatchNorm, any input size")
def _vgg_bn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return VGGSmallBN(input_shape[0], num_classes)


@register_model("mlp", description="tiny 2-layer MLP for tests")
def _mlp(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(
        nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Linear(32, num_classes)
    )


def batchnorm_names(model: nn.Module) -> list[str]:
    """Every ``state_dict`` entry of the model's BatchNorm layers (gamma, beta, running mean
    and variance, batch counter): what FedLTN keeps on the client."""
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            prefix = f"{module_name}." if module_name else ""
            names += [prefix + key for key in module.state_dict()]
    return names


def state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's ``state_dict`` as numpy copies (parameters and buffers, in order)."""
    return {name: t.detach().cpu().numpy().copy() for name, t in model.state_dict().items()}


def load_state_arrays(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Load numpy tensors into the model (names and shapes must match exactly)."""
    model.load_state_dict(
        {name: torch.from_numpy(np.array(a)) for name, a in arrays.items()}, strict=True
    )
