"""The ``global`` protocol's evaluator (fedticket.learn.eval_protocols): the server's model on the
held-out test set of all classes, scored on the server."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from fedticket.learn.data import global_test_set
from fedticket.learn.models import load_state_arrays, model_for, state_arrays
from fedticket.learn.train import EvalStats, evaluate

if TYPE_CHECKING:
    from fedticket.config import RunConfig


@dataclass
class GlobalEvaluator:
    """Scores a global model on the global test set, on the server. A model whose tensors do
    not cover the whole network (personal BatchNorm kept on the clients) has no global score."""

    model: nn.Module
    x: np.ndarray
    y: np.ndarray
    batch_size: int = 500

    def evaluate(self, arrays: dict[str, np.ndarray]) -> EvalStats:
        if set(arrays) != set(state_arrays(self.model)):
            return EvalStats(math.nan, math.nan, 0)
        load_state_arrays(self.model, arrays)
        return evaluate(self.model, self.x, self.y, batch_size=self.batch_size)


def build_global_evaluator(config: RunConfig, num_partitions: int) -> GlobalEvaluator:
    """The server's evaluator: the run's model (seeded as the clients build it) on CPU and the
    global test set. Raises ``DataError`` when the server cannot read the data set (a
    deployment whose images live only on the devices)."""
    model = model_for(config)
    x, y = global_test_set(config, num_partitions)
    return GlobalEvaluator(model, x, y, config.eval_batch_size)
