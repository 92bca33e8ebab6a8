"""FedAvg client: train the received dense model locally and send it back.

Implementation based on McMahan et al., AISTATS 2017 (https://arxiv.org/abs/1602.05629).
FedAvg has no personalised model: its personalised accuracy is the global model's accuracy on
the client's local test split (so both columns are equal for FedAvg by construction).
"""

from __future__ import annotations

import numpy as np

from clients.base import FederatedClient, register_client
from fedticket.models import load_state_arrays, state_arrays
from fedticket.train import train


@register_client("fedavg")
class FedAvgClient(FederatedClient):
    def fit(
        self, server_round: int, arrays: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        load_state_arrays(self.model, arrays)
        stats = train(
            self.model,
            self.data.x_train,
            self.data.y_train,
            epochs=self.config.local_epochs,
            batch_size=self.config.batch_size,
            lr=self.config.lr,
            momentum=self.config.momentum,
            weight_decay=self.config.weight_decay,
            seed=self.seed_for(server_round),
        )
        counters = self.state.counters()
        counters["rounds-trained"] = int(counters.get("rounds-trained", 0)) + 1
        counters["last-round"] = server_round
        self.state.save_counters(counters)
        metrics = {
            "num-examples": len(self.data.y_train),
            "train-loss": stats.loss,
            "train-seconds": stats.seconds,
            "density": 1.0,
            "rounds-trained": counters["rounds-trained"],
        }
        return state_arrays(self.model), metrics
