"""Fed-LTP server: a lottery ticket found on public data, nested sub-models for the clients,
a keeper mean of their DP-SGD updates, Laplace-noised validation, and a privacy budget.

Implementation based on Shi et al., "Efficient federated learning with enhanced privacy via
lottery ticket pruning in edge computing", arXiv 2305.01387 (Algorithms 1-2, Theorem 1); every
open point and our choice is in docs/algorithms/fedltp.md.

- **Ticket** (``prepare``): ``fedticket.learn.public_ticket`` on the server's public data
  (``public-fraction``, disjoint from every client's); the global model is the ticket reset to
  its init under the largest sub-model.
- **Sub-models**: one-shot, everyone trains the ticket; iterative, ``fedltp-submodels`` nested
  top-k masks by the trained ticket's magnitudes, a client getting one at its first selection
  (a seeded deal without replacement) and keeping it for the run. Masks are computed once,
  before round 1.
- **Aggregation**: each weight averaged over the clients whose sub-model holds it (the text's
  rule; Algorithm 2's plain 1 / K mean contradicts it); a weight nobody trained keeps its value.
- **Validation**: every evaluating client gets the global model and releases its correct count
  on its validation split plus Laplace noise; the best-scoring round's model is the final one
  (Eq. 19), and ``validated_round`` in the rounds table names it.
- **Privacy** (``strategies.privacy_book``): each round's row holds the run's epsilon (the
  largest client's, dp-accounting's RDP accountant), zCDP's rho and the paper's Theorem 1
  figure; the run stops, saying why, before a round that could take any client past
  ``fedltp-epsilon``.
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from fedticket.algorithms.fedltp import (
    FedLTPSettings,
    kept_budgets,
    retentions,
    submodel_for,
)
from fedticket.config import ConfigError
from fedticket.learn.data import DataError, public_set
from fedticket.learn.public_ticket import search_ticket
from fedticket.sparse.consensus import top_k_masks
from fedticket.sparse.masks import apply_masks
from fedticket.store.checkpoints import (
    check_id_map,
    check_masks,
    describe,
    is_count,
    is_real,
    require,
    require_key,
    split_prefix,
)
from fedticket.strategies.base import Masks, NodeInfo, register_strategy
from fedticket.strategies.exchange import Outbox
from fedticket.strategies.fixed_mask import ServerMaskedFedAvg
from fedticket.strategies.privacy_book import PrivacyBook
from fedticket.strategies.replies import COUNT, SHARE, MetricSpec
from fedticket.wire.protocol import NUM_TRAIN

log = logging.getLogger("flwr")
#: a noisy count's bound: the Laplace tail beyond 1e12 has probability below exp(-1e6)
NOISY_COUNT = MetricSpec(low=-1e12, high=1e12)


@register_strategy("fedltp")
class FedLTP(ServerMaskedFedAvg):
    """See the module docstring."""

    fuses_evaluation = False  # it validates the global model, not the sub-model trained next
    train_metrics: ClassVar[dict[str, MetricSpec]] = {
        # NaN: a loss of the training records would be a release the accountant misses
        "train-loss": MetricSpec(low=0, nan_ok=True, required=True),
        "noisy-steps": COUNT,
        "clipped-share": SHARE,
    }
    evaluate_metrics: ClassVar[dict[str, MetricSpec]] = {
        "validation-correct": NOISY_COUNT,
        "validation-size": MetricSpec(low=0, high=2**31 - 1, integer=True, bound=NUM_TRAIN),
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if any(name.endswith("running_mean") for name in self.template):
            raise ConfigError(
                f"Fed-LTP trains with per-example gradients (DP-SGD); model "
                f"'{self.config.model}' has BatchNorm, which mixes examples: use one without"
            )
        self.submodels: list[Masks] = []  # largest first; [0] is the global model's
        self.assigned: dict[int, int] = {}  # partition id -> its sub-model
        self.book = PrivacyBook(self.fedltp, self.config.batch_size)
        self.best_round, self.best_score = 0, -math.inf
        self.best_model: dict[str, np.ndarray] = {}
        self._scores: list[tuple[float, int]] = []  # this round's (noisy count, size)
        self._phase = "train"

    @property
    def fedltp(self) -> FedLTPSettings:
        """Fed-LTP's hyper-parameters (``fedticket.algorithms.fedltp``)."""
        return FedLTPSettings.of(self.config)

    # ------------------------------------------------------------------ before round 1
    def prepare(self, grid: Grid, initial: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        settings, config = self.fedltp, self.config
        try:
            x, y = public_set(config)
        except (DataError, OSError) as exc:
            raise DataError(
                f"Fed-LTP's server trains its ticket on public data it reads itself: {exc}"
            ) from exc
        log.info(
            "Fed-LTP: the server searches %d ticket candidates on %d public images before round 1",
            settings.fedltp_tickets,
            len(y),
        )
        ticket = search_ticket(
            config,
            x,
            y,
            self.prunable,
            1.0 - settings.fedltp_pruned,
            candidates=settings.fedltp_tickets,
            epochs=settings.fedltp_ticket_epochs,
            lr=settings.fedltp_ticket_lr,
        )
        ranking = {name: ticket.trained[name] for name in self.prunable}
        sizes = {name: self.template[name].size for name in self.prunable}
        self.submodels = [
            top_k_masks(ranking, kept_budgets(sizes, share)) for share in retentions(settings)
        ]
        log.info(
            "Fed-LTP: ticket %d of %d picked (correct on %d public images: %s); sub-models keep %s",
            ticket.chosen,
            len(ticket.scores),
            len(y),
            ticket.scores,
            [round(share, 4) for share in retentions(settings)],
        )
        return apply_masks(ticket.weights, self.submodels[0])

    # ------------------------------------------------------------------ rounds
    def stop_reason(self, server_round: int) -> str:
        """Why the run must stop before ``server_round`` ("" to go on): one more round could
        take a client past ``fedltp-epsilon``."""
        if all(self.book.within(node) for node in self.nodes.values()):
            return ""
        settings = self.fedltp
        worst = max(self.book.epsilon(node, 1) for node in self.nodes.values())
        return (
            f"privacy budget: round {server_round} could spend epsilon {worst:.3f} > "
            f"fedltp-epsilon={settings.fedltp_epsilon:g} (delta {settings.fedltp_delta:g}) for "
            f"a client; stopped after round {server_round - 1}"
        )

    def train_sample(self, server_round: int) -> list[NodeInfo]:
        """The sampled clients, each counted as spending a round, newcomers dealt a sub-model.
        A client that one more round would take past the budget is not sent one (a retried
        round trains its clients again: the check before the round cannot see retries)."""
        chosen = [node for node in super().train_sample(server_round) if self.book.within(node)]
        count = len(self.submodels)
        for node in chosen:
            pid = node.partition_id
            if pid not in self.assigned:
                self.assigned[pid] = submodel_for(len(self.assigned), count, self.config.seed)
            self.masks[pid] = self.submodels[self.assigned[pid]]
            self.book.count(node, "train")
        return chosen

    def train_tensors(
        self, server_round: int, node: NodeInfo, global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        self._phase = "train"
        return global_arrays

    def evaluate_tensors(
        self, server_round: int, node: NodeInfo, global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        self._phase = "evaluate"
        return global_arrays

    def client_masks(self, server_round: int, node: NodeInfo) -> Masks:
        """A client trains its sub-model; every evaluation (and validation) is of the global
        model, the largest sub-model."""
        if self._phase == "evaluate":
            return self.submodels[0]
        return self.server_mask(node)

    def server_mask(self, node: NodeInfo) -> Masks:
        return self.submodels[self.assigned[node.partition_id]]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Outbox:
        outbox = super().configure_evaluate(server_round, arrays, config, grid)
        self._scores = []
        if self.fedltp.validates:
            for sent in outbox.sent:
                if sent.node is not None:
                    self.book.count(sent.node, "validate")
        return outbox

    def on_evaluate_reply(self, server_round: int, node: NodeInfo, metrics: dict) -> None:
        """Keep the noisy count, clamped to [0, size] (post-processing: no privacy cost; a
        client can sway the score by its claimed size at most)."""
        size = int(metrics.get("validation-size", 0))
        if self.fedltp.validates and size > 0 and "validation-correct" in metrics:
            noisy = float(metrics["validation-correct"])
            self._scores.append((min(max(noisy, 0.0), float(size)), size))

    def round_extras(self, server_round: int) -> dict[str, float]:
        """Validation, the best round so far, and the privacy spent (module docstring)."""
        extras = super().round_extras(server_round)
        total = sum(size for _count, size in self._scores)
        score = sum(count for count, _size in self._scores) / total if total else math.nan
        if not math.isnan(score) and score > self.best_score:
            self.best_round, self.best_score = server_round, score
            self.best_model = {name: a.copy() for name, a in self._global.items()}
        return {"validation_accuracy": score} | extras | self.privacy_columns()

    def privacy_columns(self) -> dict[str, float]:
        """The run's privacy spent so far and the validated round."""
        columns = self.book.columns(list(self.nodes.values()))
        return columns | {"validated_round": float(self.best_round)}

    def closing_lines(self) -> list[str]:
        """The run's privacy spent and the validated model, for the log's last lines."""
        columns = self.privacy_columns()
        return [
            f"privacy spent: epsilon {columns['privacy_epsilon']:.3f} at delta "
            f"{columns['privacy_delta']:g} (dp-accounting RDP, every noisy step), rho "
            f"{columns['privacy_rho']:.4f}; the paper's Theorem 1 gives "
            f"{columns['privacy_epsilon_theorem1']:.3f}",
            f"validated model: round {self.best_round} (noisy validation accuracy "
            f"{self.best_score:.4f})"
            if self.best_round
            else "validated model: none (no validation count arrived)",
        ]

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {
            f"submodel{i}/{name}": mask
            for i, masks in enumerate(self.submodels)
            for name, mask in masks.items()
        } | {f"best/{name}": a for name, a in self.best_model.items()}
        meta = {
            "submodels": len(self.submodels),
            "assigned": {str(k): v for k, v in self.assigned.items()},
            "trained": {str(k): v for k, v in self.book.trained.items()},
            "validated": {str(k): v for k, v in self.book.validated.items()},
            "best_round": self.best_round,
            "best_score": self.best_score if self.best_round else None,
        }
        return arrays, meta

    def check_extra(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """``CheckpointError`` naming the field unless ``restore_extra`` can use this state."""
        count = require_key(meta, "submodels", "extra")
        require(
            is_count(count) and count == len(retentions(self.fedltp)),
            "extra.submodels",
            f"is {describe(count)}, not this config's {len(retentions(self.fedltp))}",
        )
        check_id_map(
            meta,
            "assigned",
            lambda v: is_count(v) and v < count,
            f"a sub-model index below {count}",
            within="extra",
        )
        for key in ("trained", "validated"):
            check_id_map(meta, key, is_count, "a count", within="extra")
        best = require_key(meta, "best_round", "extra")
        require(is_count(best), "extra.best_round", f"is {describe(best)}, not a round")
        score = require_key(meta, "best_score", "extra")
        require(
            score is None or (is_real(score) and 0 <= score <= 1),
            "extra.best_score",
            f"is {describe(score)}, not a share or null",
        )
        shapes = {name: self.template[name].shape for name in self.prunable}
        for i in range(count):
            check_masks(
                f"extra/submodel{i}", split_prefix(arrays, f"submodel{i}"), shapes, complete=True
            )
        best_model = split_prefix(arrays, "best")
        if best_model:
            require(set(best_model) == set(self.template), "extra/best", "is not a whole model")
            for name, a in best_model.items():
                require(
                    a.shape == self.template[name].shape and bool(np.isfinite(a).all()),
                    f"extra/best/{name}",
                    "has the wrong shape or a value that is not finite",
                )
        kinds = {f"submodel{i}" for i in range(count)} | {"best"}
        for name in arrays:
            require(name.split("/", 1)[0] in kinds, f"extra/{name}", "is not Fed-LTP state")

    def restore_extra(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        self.check_extra(arrays, meta)
        self.submodels = [
            {k: v.astype(bool) for k, v in split_prefix(arrays, f"submodel{i}").items()}
            for i in range(meta["submodels"])
        ]
        self.assigned = {int(k): v for k, v in meta["assigned"].items()}
        self.book.trained = {int(k): v for k, v in meta["trained"].items()}
        self.book.validated = {int(k): v for k, v in meta["validated"].items()}
        self.best_round = meta["best_round"]
        self.best_score = meta["best_score"] if meta["best_score"] is not None else -math.inf
        best = split_prefix(arrays, "best")
        self.best_model = {name: best[name].astype(self.template[name].dtype) for name in best}
