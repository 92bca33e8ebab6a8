"""CELL server: one broadcast of the global model per round, plain FedAvg of the users'
sub-networks and stragglers' dense models.

Implementation based on Seo et al., "Communication-efficient and personalized federated lottery
ticket learning", SPAWC 2021 (arXiv 2104.12501), Algorithm 1; docs/algorithms/cell.md.

- **Downlink broadcast**: every sampled user gets the same global model, counted once per round
  and kind in the ledger (``broadcast = True``, ``strategies.broadcast``); each user applies its
  own ticket locally. The model goes either dense or under its own non-zero pattern (lossless:
  an entry that no upload kept is exactly 0 after a round without dense uploads), whichever
  encodes smaller; the rounds table records both sizes and the pick (``broadcast_dense_bytes``,
  ``broadcast_masked_bytes``, ``broadcast_masked``). The paper broadcasts "the full global
  model"; the pattern form carries the same values.
- **Aggregation** (``cell-aggregation``): the paper's sample-weighted mean in which a pruned
  entry counts as 0 ("denser models exert more influence"), or LotteryFL's keeper mean.
- **User grouping**: the users' own per-round state (lottery learning or a straggler doing plain
  FL, decided on the client by its threshold); the rounds table counts both.
- **Slow users and a round deadline** (issue #21, beyond the paper): each reply gets a modelled
  round time (the broadcast and its upload on the link model, its local epochs at its device's
  speed: node config ``compute-slowdown``, else a seeded mix of ``cell-slow-share`` users
  ``cell-slowdown`` times slower); with ``cell-deadline`` > 0 a reply modelled later than the
  deadline is left out of the aggregate. The rounds table counts who was late and who was waited
  for, and the modelled round time with and without the deadline. Time is modelled, not
  measured, so runs repeat exactly.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from fedticket.algorithms.cell import (
    CellSettings,
    kept_count,
    modelled_round_seconds,
    simulated_slowdowns,
)
from fedticket.sparse.aggregate import weighted_mean
from fedticket.strategies.base import ClientUpdate, Masks, NodeInfo, register_strategy
from fedticket.strategies.lotteryfl import LotteryFL
from fedticket.strategies.replies import MetricSpec
from fedticket.wire.records import encode_payload, payload_bytes


@register_strategy("cell")
class Cell(LotteryFL):
    """See the module docstring."""

    broadcast = True
    fuses_evaluation = False  # the evaluate broadcast is a send of its own, with its deadline
    train_metrics: ClassVar[dict[str, MetricSpec]] = {
        **LotteryFL.train_metrics,
        "straggler": MetricSpec(low=0, high=1, integer=True),
        "threshold": MetricSpec(low=-1, high=1),
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._round_states: dict[str, float] = {}
        #: (round, kind) -> the broadcast's masks (None: dense) and its sizes
        self._broadcasts: dict[tuple[int, str], tuple[Masks | None, dict[str, float]]] = {}
        self._sending: tuple[int, str] = (0, "")

    @property
    def cell(self) -> CellSettings:
        """CELL's hyper-parameters (``fedticket.algorithms.cell``)."""
        return CellSettings.of(self.config)

    def train_tensors(
        self, server_round: int, node: NodeInfo, global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        self._prepare_broadcast(server_round, "train", global_arrays)
        return global_arrays

    def evaluate_tensors(
        self, server_round: int, node: NodeInfo, global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        self._prepare_broadcast(server_round, "evaluate", global_arrays)
        return global_arrays

    def client_masks(self, server_round: int, node: NodeInfo) -> Masks | None:
        """The broadcast's form (the same for every receiver); users apply their own tickets."""
        return self._broadcasts[self._sending][0]

    def on_client_masks(self, node: NodeInfo, masks: Masks | None) -> None:
        """A straggler's dense upload leaves its ticket as it was."""
        if masks is not None:
            super().on_client_masks(node, masks)

    def _prepare_broadcast(
        self, server_round: int, kind: str, model: dict[str, np.ndarray]
    ) -> None:
        """Pick the cheaper lossless form of this send's broadcast, once per round and kind
        (derived from the model alone, so a resumed run picks the same)."""
        self._sending = (server_round, kind)
        if self._sending in self._broadcasts:
            return
        pattern = {name: model[name] != 0 for name in self.prunable}
        sizes = {
            form: self._encoded_size(model, masks)
            for form, masks in (("dense", None), ("masked", pattern))
        }
        masked = sizes["masked"] < sizes["dense"]
        self._broadcasts = {
            self._sending: (
                pattern if masked else None,
                {
                    "broadcast_dense_bytes": float(sizes["dense"]),
                    "broadcast_masked_bytes": float(sizes["masked"]),
                    "broadcast_masked": float(masked),
                },
            )
        } | {key: value for key, value in self._broadcasts.items() if key[0] == server_round}

    def _encoded_size(self, model: dict[str, np.ndarray], masks: Masks | None) -> int:
        record, _ = encode_payload(
            model,
            masks,
            value_dtype=self.config.value_dtype,
            compression=self.config.value_compression,
        )
        return payload_bytes(record)

    def at_target(self, masks: Masks) -> bool:
        """Whether every layer of a ticket is at ``cell-target-pruned``."""
        target = self.cell.cell_target_pruned
        return all(int(m.sum()) <= kept_count(m.size, target) for m in masks.values())

    def aggregate(
        self, server_round: int, updates: list[ClientUpdate], global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        stragglers = sum(1 for u in updates if u.metrics.get("straggler", 0) == 1)
        timing = self._deadline(server_round, updates)
        late = timing.pop("_late")
        updates = [u for u in updates if u.node.partition_id not in late]
        if not updates:
            self._round_states = timing | {"stragglers": float(stragglers), "lottery_steps": 0.0}
            return global_arrays  # every reply was late: the model stays
        if self.cell.cell_aggregation == "keeper":
            merged = super().aggregate(server_round, updates, global_arrays)
        else:
            merged = weighted_mean([u.arrays for u in updates], self.client_weights(updates))
        self._round_states = timing | {
            "stragglers": float(stragglers),
            "lottery_steps": float(sum(1 for u in updates if u.metrics.get("pruned", 0) == 1)),
        }
        return merged

    def _deadline(self, server_round: int, updates: list[ClientUpdate]) -> dict:
        """Each reply's modelled round time; which are late for ``cell-deadline``; the round's
        modelled time with the deadline (the last reply waited for, or the deadline itself when
        one is late) and without it (the slowest reply)."""
        settings, config = self.cell, self.config
        num_partitions = max((u.node.num_partitions for u in updates), default=0)
        mix = simulated_slowdowns(
            num_partitions, config.seed, settings.cell_slow_share, settings.cell_slowdown
        )
        down: dict[str, float] = {}  # broadcast domain -> its broadcast's seconds
        up: dict[int, float] = {}
        for row in self.ledger.records:
            if row.round == server_round and row.kind == "train":
                if row.channel == "broadcast":
                    down[row.domain] = row.transfer_seconds
                elif row.direction == "up":
                    up[row.partition_id] = row.transfer_seconds
        seconds = {}
        for u in updates:
            node = u.node
            slowdown = node.compute_slowdown or mix.get(node.partition_id, 1.0)
            seconds[node.partition_id] = modelled_round_seconds(
                down.get(node.broadcast_domain, math.nan),
                u.num_examples,
                config.local_epochs,
                settings.cell_samples_per_second,
                slowdown,
                up.get(node.partition_id, math.nan),
            )
        deadline = settings.cell_deadline
        late = {pid for pid, t in seconds.items() if deadline > 0 and t > deadline}
        waited = [t for pid, t in seconds.items() if pid not in late]
        slowest = max(seconds.values(), default=math.nan)
        return {
            "_late": late,
            "late": float(len(late)),
            "waited_for": float(len(waited)),
            "model_round_seconds": deadline if late else max(waited, default=math.nan),
            "model_round_seconds_no_deadline": slowest,
        }

    def round_extras(self, server_round: int) -> dict[str, float]:
        """Lottery-step and straggler counts of this round's replies, the share of users whose
        ticket is done, and the train broadcast's two forms and pick."""
        extras, self._round_states = self._round_states, {}
        sent = self._broadcasts.get((server_round, "train"), (None, {}))[1]
        return super().round_extras(server_round) | extras | sent
