"""CELL client: per-user threshold ramping between lottery learning and plain FL on the
broadcast global model.

Implementation based on Seo et al., SPAWC 2021 (arXiv 2104.12501), Algorithm 1; every open
point and our choice is in docs/algorithms/cell.md (section 1.2). The user receives the dense
global model w_g (one broadcast for all), tests it on its validation data and:
- **lottery learning** when that accuracy reaches its own threshold and its ticket is not done:
  prunes ``cell-prune-step`` more of each layer's weights by magnitude of its own latest trained
  model w_k (w_g before it first trains) within its mask,
  rewinds the survivors (and every unpruned tensor) to theta_0, trains under the mask, uploads
  the sub-network and resets its threshold to ``cell-threshold``;
- **plain FL** (a straggler) otherwise: multiplies its threshold by ``cell-threshold-decay``,
  trains the dense model from w_g and uploads it dense (its ticket waits in its state);
- **at the target**: trains w_g under its finished ticket (no test, no rewind) and uploads it.

The ticket is the client's own state (``ticket``), apart from the mask the codec tracks
(``mask``: the broadcast's form, or the last uploaded ticket). Deviation: a sparse upload always
carries its mask's positions (the broadcast holds no mask of this user's that the reply could
refer to); the shared codec codes them near the entropy bound.
"""

from __future__ import annotations

import numpy as np

from fedticket.algorithms.cell import CellSettings, next_pruned_share, removal_counts
from fedticket.clients.base import Masks, density, register_client
from fedticket.clients.lotteryfl import LotteryFLClient, initial_weights
from fedticket.learn.models import load_state_arrays, state_arrays
from fedticket.sparse.masks import apply_masks, prune_smallest


@register_client("cell")
class CellClient(LotteryFLClient):
    fuses_evaluation = False  # see FederatedClient.fuses_evaluation

    @property
    def cell(self) -> CellSettings:
        """CELL's hyper-parameters (``fedticket.algorithms.cell``)."""
        return CellSettings.of(self.config)

    def fit(
        self, server_round: int, arrays: dict[str, np.ndarray], masks: Masks | None
    ) -> tuple[dict[str, np.ndarray], Masks | None, dict[str, float]]:
        settings, config = self.cell, self.config
        ticket = self.state.arrays("ticket") or self.dense_masks(arrays)
        counters = self.state.counters()
        pruned = float(counters.get("pruned-share", 1.0 - density(ticket)))
        threshold = float(counters.get("threshold", settings.cell_threshold))
        load_state_arrays(self.model, arrays)
        gate_accuracy = self.gate_accuracy()
        done = pruned >= settings.cell_target_pruned
        lottery = not done and gate_accuracy >= threshold
        if lottery:
            pruned = next_pruned_share(
                pruned, settings.cell_prune_step, settings.cell_target_pruned
            )
            # the paper prunes "from w_k^t": the user's own latest trained model, which makes the
            # ticket personal (the broadcast model when it has not trained yet)
            ranked = self.state.arrays("trained") or arrays
            ticket = prune_smallest(ranked, ticket, removal_counts(ticket, pruned))
            start = initial_weights(config.model, config.dataset, config.seed)
            load_state_arrays(self.model, apply_masks(start, ticket))
            threshold = settings.cell_threshold
        elif done:
            load_state_arrays(self.model, apply_masks(arrays, ticket))
        else:
            threshold *= settings.cell_threshold_decay
        # a straggler trains and uploads the dense model
        stats = self.train_masked(server_round, ticket if lottery or done else None)
        prunes = int(counters.get("prunes", 0)) + int(lottery)
        counters |= {"pruned-share": pruned, "threshold": threshold, "prunes": prunes}
        self.state.save_arrays("ticket", ticket)  # kept while a straggler uploads dense
        self.state.save_counters(counters)
        metrics = {
            "num-examples": len(self.data.y_train),
            "train-loss": stats.loss,
            "train-seconds": stats.seconds,
            "gate-accuracy": gate_accuracy,
            "pruned": float(lottery),
            "kept-rate": density(ticket),
            "prunes": prunes,
            "straggler": float(not (lottery or done)),
            "threshold": threshold,
        }
        return state_arrays(self.model), (ticket if lottery or done else None), metrics

    def evaluate(
        self, server_round: int, arrays: dict[str, np.ndarray], masks: Masks | None
    ) -> dict[str, float]:
        """Every protocol on the user's personal model: the broadcast model under its own
        ticket (each user applies its mask locally)."""
        ticket = self.state.arrays("ticket")
        personal = apply_masks(arrays, ticket) if ticket else arrays
        return super().evaluate(server_round, personal, ticket)
