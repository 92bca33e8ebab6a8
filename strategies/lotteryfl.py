"""LotteryFL server: every client trains its own lottery ticket (a personal mask) of one shared
global model; the server averages each weight over the clients whose ticket keeps it.

Implementation based on Li et al., "LotteryFL: Personalized and Communication-Efficient
Federated Learning with Lottery Ticket Hypothesis on Non-IID Datasets", arXiv 2008.03371,
and its reference code (github.com/charleslipku/LotteryFL); see ../shared/algorithms/lotteryfl.md.

Deviations from the reference code
----------------------------------
- Masks live on the clients (``context.state``) and travel only when they change; the server
  keeps a copy to build each client's sub-model ``theta_global * m_k`` (the code keeps them
  all in the server process).
- ``aggregation-weights`` chooses keeper means weighted by sample counts ("samples") or plain
  ("uniform", the code's rule); the two agree on the paper's balanced 40-image clients.
"""

from __future__ import annotations

from typing import ClassVar

from fedticket.algorithms.lotteryfl import LotteryFLSettings
from fedticket.sparse.masks import ones_masks
from fedticket.strategies.base import Masks, NodeInfo, register_strategy
from fedticket.strategies.fedavg import FedAvg
from fedticket.strategies.replies import COUNT, SHARE, MetricSpec


@register_strategy("lotteryfl")
class LotteryFL(FedAvg):
    """Sends client k the global model under k's mask (all ones until k first prunes) and
    aggregates with FedAvg's keeper mean: each weight is averaged over the replying clients whose
    mask keeps it, a weight nobody keeps keeps its global value, biases are plain means
    (spec A1-A3)."""

    train_metrics: ClassVar[dict[str, MetricSpec]] = {
        "gate-accuracy": MetricSpec(low=0, high=1, nan_ok=True),  # NaN: no gate data
        "pruned": MetricSpec(low=0, high=1, integer=True),
        "kept-rate": SHARE,
        "prunes": COUNT,
    }

    @property
    def lottery(self) -> LotteryFLSettings:
        """LotteryFL's hyper-parameters (``fedticket.algorithms.lotteryfl``)."""
        return LotteryFLSettings.of(self.config)

    def client_masks(self, server_round: int, node: NodeInfo) -> Masks:
        masks = self.masks.get(node.partition_id)
        if masks is None:
            masks = ones_masks({name: self.template[name].shape for name in self.prunable})
            self.masks[node.partition_id] = masks
        return masks

    def at_target(self, masks: Masks) -> bool:
        """Whether a client with ``masks`` has stopped pruning (its kept share is at or below
        ``target-density``, the code's stop rule)."""
        kept = sum(int(m.sum()) for m in masks.values())
        return kept <= self.lottery.target_density * sum(m.size for m in masks.values())

    def round_extras(self, server_round: int) -> dict[str, float]:
        """``share_at_target``: the share of connected clients whose ticket is done pruning
        (the benchmark reads "rounds to reach the target sparsity" from it)."""
        pids = [n.partition_id for n in self.nodes.values()]
        done = sum(1 for pid in pids if pid in self.masks and self.at_target(self.masks[pid]))
        return {"share_at_target": done / len(pids) if pids else float("nan")}
