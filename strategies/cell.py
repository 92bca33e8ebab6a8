"""CELL server: one broadcast of the global model per round, plain FedAvg of the users'
sub-networks and stragglers' dense models.

Implementation based on Seo et al., "Communication-efficient and personalized federated lottery
ticket learning", SPAWC 2021 (arXiv 2104.12501), Algorithm 1; docs/algorithms/cell.md.

- **Downlink broadcast**: every sampled user gets the same dense global model, counted once per
  round in the ledger (``broadcast = True``, ``strategies.broadcast``); each user applies its own
  ticket locally. The rounds table also records what the broadcast would cost under the model's
  non-zero pattern (``broadcast_masked_bytes``: lossless, since entries no upload kept are exactly
  0 after a round without dense uploads) beside the dense encoding sent
  (``broadcast_dense_bytes``): the measurement for picking the cheaper form.
- **Aggregation** (``cell-aggregation``): the paper's sample-weighted mean in which a pruned
  entry counts as 0 ("denser models exert more influence"), or LotteryFL's keeper mean.
- **User grouping**: the users' own per-round state (lottery learning or a straggler doing plain
  FL, decided on the client by its threshold); the rounds table counts both.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fedticket.algorithms.cell import CellSettings, kept_count
from fedticket.sparse.aggregate import weighted_mean
from fedticket.wire.records import encode_payload, payload_bytes
from strategies.base import ClientUpdate, Masks, NodeInfo, register_strategy
from strategies.lotteryfl import LotteryFL
from strategies.replies import MetricSpec


@register_strategy("cell")
class Cell(LotteryFL):
    """See the module docstring."""

    broadcast = True
    train_metrics: ClassVar[dict[str, MetricSpec]] = {
        **LotteryFL.train_metrics,
        "straggler": MetricSpec(low=0, high=1, integer=True),
        "threshold": MetricSpec(low=-1, high=1),
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._round_states: dict[str, float] = {}

    @property
    def cell(self) -> CellSettings:
        """CELL's hyper-parameters (``fedticket.algorithms.cell``)."""
        return CellSettings.of(self.config)

    def client_masks(self, server_round: int, node: NodeInfo) -> Masks | None:
        return None  # the broadcast is the dense global model; users mask it themselves

    def at_target(self, masks: Masks) -> bool:
        """Whether every layer of a ticket is at ``cell-target-pruned``."""
        target = self.cell.cell_target_pruned
        return all(int(m.sum()) <= kept_count(m.size, target) for m in masks.values())

    def aggregate(
        self, server_round: int, updates: list[ClientUpdate], global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        stragglers = sum(1 for u in updates if u.metrics.get("straggler", 0) == 1)
        if self.cell.cell_aggregation == "keeper":
            merged = super().aggregate(server_round, updates, global_arrays)
        else:
            merged = weighted_mean([u.arrays for u in updates], self.client_weights(updates))
        self._round_states = {
            "stragglers": float(stragglers),
            "lottery_steps": float(sum(1 for u in updates if u.metrics.get("pruned", 0) == 1)),
        } | self._broadcast_forms(merged)
        return merged

    def _broadcast_forms(self, model: dict[str, np.ndarray]) -> dict[str, float]:
        """Payload bytes of the next broadcast dense and under its non-zero pattern."""
        config = self.config
        pattern = {name: model[name] != 0 for name in self.prunable}
        sizes = {}
        for form, masks in (("dense", None), ("masked", pattern)):
            record, _ = encode_payload(
                model,
                masks,
                value_dtype=config.value_dtype,
                compression=config.value_compression,
            )
            sizes[f"broadcast_{form}_bytes"] = float(payload_bytes(record))
        return sizes

    def round_extras(self, server_round: int) -> dict[str, float]:
        """Lottery-step and straggler counts of this round's replies, the share of users whose
        ticket is done, and the two broadcast forms' sizes."""
        extras, self._round_states = self._round_states, {}
        return super().round_extras(server_round) | extras
