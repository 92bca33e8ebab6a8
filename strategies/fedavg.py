"""FedAvg: the dense baseline, on the same base as the sparse algorithms (a dense tensor is the
density-1 case of the sparse payload path).

Implementation based on McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017 (https://arxiv.org/abs/1602.05629).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fedticket.sparse.aggregate import masked_mean
from fedticket.strategies.base import ClientUpdate, SparseStrategy, register_strategy
from fedticket.strategies.replies import COUNT, MetricSpec


@register_strategy("fedavg")
class FedAvg(SparseStrategy):
    """Every sampled client gets the global model; the new global model is the mean of the
    returned models, weighted by local sample counts (``aggregation-weights="samples"``, the
    paper's rule) or uniformly (``"uniform"``). When clients train under masks (subclasses that
    set ``client_masks``), each entry is averaged over the clients that kept it."""

    train_metrics: ClassVar[dict[str, MetricSpec]] = {"rounds-trained": COUNT}

    def aggregate(
        self, server_round: int, updates: list[ClientUpdate], global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        weights = self.client_weights(updates)
        return masked_mean(
            [u.arrays for u in updates], [u.masks for u in updates], weights, global_arrays
        )
