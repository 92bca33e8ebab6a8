"""The dataset and partitioner registries (``fedticket.registry``), and the types they hold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedticket.registry import DATASETS, PARTITIONERS

if TYPE_CHECKING:
    from fedticket.config import RunConfig


class DataError(ValueError):
    """A dataset or partition that cannot be built; the message names the fix."""


@dataclass(frozen=True)
class Pool:
    """All samples of a dataset: ``x`` (N, C, H, W) float32, normalised; ``y`` (N,) int64."""

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load: Callable[[str, bool], Pool]  # (data_dir, download) -> Pool
    input_shape: tuple[int, int, int]
    num_classes: int
    needs_data_dir: bool
    description: str


Partitioner = Callable[[np.ndarray, int, "RunConfig"], list[np.ndarray]]


def register_dataset(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    needs_data_dir: bool = False,
    description: str = "",
) -> Callable[[Callable[[str, bool], Pool]], Callable[[str, bool], Pool]]:
    def wrap(load: Callable[[str, bool], Pool]) -> Callable[[str, bool], Pool]:
        DATASETS.add(
            name, DatasetSpec(name, load, input_shape, num_classes, needs_data_dir, description)
        )
        return load

    return wrap


def register_partitioner(name: str) -> Callable[[Partitioner], Partitioner]:
    def wrap(fn: Partitioner) -> Partitioner:
        PARTITIONERS.add(name, fn)
        return fn

    return wrap
