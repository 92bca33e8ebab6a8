"""FedAvg client: train the received model locally and send it back.

Implementation based on McMahan et al., AISTATS 2017 (https://arxiv.org/abs/1602.05629).
When the server sends a mask (a sub-network), the client trains under it and replies with the
kept entries only. Its ``local`` protocol score (``fedticket.learn.eval_protocols``) is the global
model after one round of local training: FedAvg plus local fine-tuning, the fair personalised
baseline.
"""

from __future__ import annotations

import numpy as np

from fedticket.clients.base import FederatedClient, Masks, register_client
from fedticket.learn.models import load_state_arrays, state_arrays
from fedticket.learn.train import train
from fedticket.sparse.masks import Mask


@register_client("fedavg")
class FedAvgClient(FederatedClient):
    def fit(
        self, server_round: int, arrays: dict[str, np.ndarray], masks: Masks | None
    ) -> tuple[dict[str, np.ndarray], Masks | None, dict[str, float]]:
        load_state_arrays(self.model, arrays)
        stats = train(
            self.model,
            self.data.x_train,
            self.data.y_train,
            epochs=self.config.local_epochs,
            batch_size=self.config.batch_size,
            lr=self.lr_for(server_round),
            momentum=self.config.momentum,
            weight_decay=self.config.weight_decay,
            mask=Mask.from_numpy(masks) if masks else None,
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
            "rounds-trained": counters["rounds-trained"],
        }
        return state_arrays(self.model), masks, metrics
