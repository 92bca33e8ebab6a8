"""The strategy base: what every algorithm's server side shares, so an algorithm is its steps.

``SparseStrategy`` implements Flower 1.39's ``Strategy`` once, composing the node roster
(``strategies.roster``), the message exchange (``strategies.exchange``), the results tables
(``strategies.reporting``), the round loop (``strategies.rounds``), the evaluate steps and
round rows (``strategies.evaluation_steps``) and checkpoints (``strategies.checkpointing``).
An algorithm overrides ``aggregate`` and, if it needs, the other hooks of the "algorithm
steps" section (``client_masks``: the mask node k trains under).
"""

from __future__ import annotations

import logging
import secrets
import time
from abc import abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedticket.config import ConfigError, RunConfig
from fedticket.learn.global_evaluator import GlobalEvaluator
from fedticket.sparse.masks import Masks
from fedticket.store.results import RunDirectory
from fedticket.store.tracking import NoTracking, Tracker
from fedticket.strategies import checkpointing, rounds
from fedticket.strategies.evaluation_steps import EvaluationSteps
from fedticket.strategies.exchange import Exchange, Failure, Outbox, Send
from fedticket.strategies.fused_evaluation import PendingRound
from fedticket.strategies.nodes import (
    NoClientsError as NoClientsError,  # re-exported, as are the next
)
from fedticket.strategies.nodes import NodeInfo, reply_row
from fedticket.strategies.registry import STRATEGIES as STRATEGIES
from fedticket.strategies.registry import register_strategy as register_strategy
from fedticket.strategies.replies import CheckedReply, MetricSpec
from fedticket.strategies.reporting import RunTables
from fedticket.strategies.roster import NodeRoster
from fedticket.wire.ledger import CommLedger
from fedticket.wire.protocol import NUM_EXAMPLES, Instructions
from fedticket.wire.records import record_to_state, state_to_record

log = logging.getLogger("flwr")  # Flower's handlers print it in `flwr run --stream`


@dataclass(frozen=True)
class ClientUpdate:
    """One decoded training reply: dense tensors (zeros outside the mask) and the mask."""

    node: NodeInfo
    arrays: dict[str, np.ndarray]
    masks: Masks | None
    metrics: dict[str, float]

    @property
    def num_examples(self) -> int:
        return int(self.metrics.get(NUM_EXAMPLES, 0))


class SparseStrategy(EvaluationSteps, Strategy):
    """Base of every fedticket strategy (see the module docstring). ``config``: the validated
    run configuration; ``template``: the model's tensors (names, shapes, dtypes), what every
    payload must decode to; ``run_dir``: where the tables go after every round; ``prunable``:
    the tensors masks may cover (conv and linear weights)."""

    name: ClassVar[str] = ""
    #: True: BatchNorm tensors stay on the clients and are left out of ``template`` and of
    #: every message (FedLTN); must match the client's ``FederatedClient.local_batchnorm``.
    local_batchnorm: ClassVar[bool] = False
    #: metrics the algorithm's clients add to the base ones (``strategies.replies``); metrics
    #: named nowhere are dropped unread
    train_metrics: ClassVar[Mapping[str, MetricSpec]] = {}
    #: True: the model goes down as one broadcast per send, counted once (CELL)
    broadcast: ClassVar[bool] = False
    evaluate_metrics: ClassVar[Mapping[str, MetricSpec]] = {}
    #: False: round r's evaluate message is not round r+1's train message (Fed-LTP, CELL), so
    #: ``evaluate-with-train`` is refused (``strategies.fused_evaluation``)
    fuses_evaluation: ClassVar[bool] = True

    @property
    def uses_budgets(self) -> bool:
        """Whether nodes' density budgets (``density-level``) shape this run (hetero-FLASH);
        elsewhere the tables leave the level NaN rather than a budget nobody applied."""
        return False

    @classmethod
    def check_config(cls, config: RunConfig) -> None:
        """``ConfigError`` for settings this algorithm cannot run with (before any file)."""
        if config.evaluate_with_train and not cls.fuses_evaluation:
            raise ConfigError(
                f"run-config key 'evaluate-with-train': {cls.name} evaluates another model "
                "than the one its clients train next, so its evaluation cannot ride on the "
                "train messages (fix: --run-config 'evaluate-with-train=false')"
            )

    def __init__(
        self,
        config: RunConfig,
        template: Mapping[str, np.ndarray],
        run_dir: RunDirectory,
        prunable: list[str] | None = None,
    ) -> None:
        self.config = config
        self.template = {k: np.zeros_like(v) for k, v in template.items()}
        self.prunable = list(prunable or [])
        self.run_dir = run_dir
        self.tables = RunTables(run_dir)
        metrics = {"train": self.train_metrics, "evaluate": self.evaluate_metrics}
        self.exchange = Exchange(
            config, self.template, self.tables, self.instructions, metrics, self.broadcast
        )
        self.roster = NodeRoster(config, self.exchange, self.tables, self.uses_budgets)
        self.masks: dict[int, Masks] = {}  # partition id -> the mask the client trains under
        self._global: dict[str, np.ndarray] = {}
        self._round_started = 0.0
        #: the round whose client evaluation the next train messages carry (evaluate-with-train)
        self.pending: PendingRound | None = None
        self.tracker: Tracker = NoTracking()  # gets each round's row (``tracking``)
        self._run_started = time.perf_counter()
        self.checkpoint_round = 0  # the last round a checkpoint holds
        self.stopped = ""  # why the run ended before num-rounds ("": it did not)
        #: scores the ``global`` protocol; set by the ServerApp once it knows the partitions
        self.global_evaluator: GlobalEvaluator | None = None
        self.reference_best: dict[int, float] = {}  # partition id -> best-ever reported
        #: names this run's client state snapshots on the clients (``clients.state_location``)
        self.state_key = checkpointing.read_state_key(run_dir) or secrets.token_hex(8)

    # ------------------------------------------------------------------ algorithm steps
    def client_masks(self, server_round: int, node: NodeInfo) -> Masks | None:
        """The mask node ``node`` trains under (default: what it last reported, else dense)."""
        return self.masks.get(node.partition_id)

    def train_tensors(
        self, server_round: int, node: NodeInfo, global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Tensors node ``node`` receives for training, before its mask is applied."""
        return global_arrays

    def evaluate_tensors(
        self, server_round: int, node: NodeInfo, global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        return self.train_tensors(server_round, node, global_arrays)

    def on_client_masks(self, node: NodeInfo, masks: Masks | None) -> None:
        """A client replied with a new mask (e.g. it pruned): remember it."""
        if masks is None:
            self.masks.pop(node.partition_id, None)
        else:
            self.masks[node.partition_id] = masks

    def train_sample(self, server_round: int) -> list[NodeInfo]:
        """The nodes that train this round (default: ``fraction-train`` of all, seeded)."""
        return self.sample(self.config.fraction_train, self.config.min_train_clients)

    def prepare(self, grid: Grid, initial: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once after ``connect`` and before round 1; returns the initial global model
        (FLASH's stage 1 measures layer sensitivity here and re-initialises the model)."""
        return initial

    def client_weights(self, updates: list[ClientUpdate]) -> list[int]:
        """Each update's weight in the aggregate: its sample count (``aggregation-weights=
        "samples"``, FedAvg's rule; counts are checked against the handshake) or 1 each
        (``"uniform"``, also when every count is 0)."""
        counts = [u.num_examples for u in updates]
        if self.config.aggregation_weights == "samples" and sum(counts) > 0:
            return counts
        return [1] * len(updates)

    def send_stage(
        self,
        grid: Grid,
        sends: list[tuple[NodeInfo, dict[str, np.ndarray], Masks | None]],
        stage: str,
    ) -> list[tuple[NodeInfo, CheckedReply]]:
        """An algorithm's extra training exchange before round 1 (``prepare``; FLASH's stage
        1): one train message per (node, tensors, mask) with ``Instructions.stage`` = ``stage``,
        sent and timed as a round's, every reply through the reply gate and in the ledger as
        round 0, failures recorded. Returns the good replies by node."""
        outgoing = [Send.to(node, tensors, masks) for node, tensors, masks in sends]
        outcome = self.exchange.send(grid, 0, MessageType.TRAIN, outgoing, stage)
        self.exchange.record_failures(0, "train", outcome)
        return [(sent.node, reply) for sent, reply in outcome.ok if sent.node is not None]

    def round_extras(self, server_round: int) -> dict[str, float]:
        """Algorithm-specific columns for this round's ``rounds.parquet`` row."""
        return {}

    def on_evaluate_reply(self, server_round: int, node: NodeInfo, metrics: dict) -> None:
        """A good evaluate reply's checked metrics (Fed-LTP's validation counts)."""

    def stop_reason(self, server_round: int) -> str:
        """Why the run ends before ``server_round`` (a privacy budget); "" to go on."""
        return ""

    def closing_lines(self) -> list[str]:
        """What the algorithm adds to the run's last log lines."""
        return []

    @abstractmethod
    def aggregate(
        self, server_round: int, updates: list[ClientUpdate], global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The new global model from this round's decoded updates (never empty)."""

    # ------------------------------------------------------------------ nodes and messages
    def connect(self, grid: Grid) -> None:
        """Wait for ``min-available-clients`` nodes and learn their partitions (the roster)."""
        self.roster.connect(grid)

    def sample(self, fraction: float, minimum: int) -> list[NodeInfo]:
        """Sample nodes by partition id with the roster's seeded RNG."""
        return self.roster.sample(fraction, minimum)

    def instructions(self, server_round: int, stage: str = "") -> Instructions:
        """Every message's header; the client-state key only when clients keep state on disk."""
        disk = self.state_on_disk
        key, checkpoint = (self.state_key, self.checkpoint_round) if disk else (None, None)
        return Instructions(server_round, self.name, key, checkpoint, stage)

    @property
    def state_on_disk(self) -> bool:
        """Clients keep their state in snapshot files (``client-state``; ``auto`` above
        ``client-state-threshold`` connected clients, where holding every client's state in
        the simulation's memory stops scaling)."""
        mode = self.config.client_state
        return mode == "disk" or (
            mode == "auto" and len(self.nodes) > self.config.client_state_threshold
        )

    # ------------------------------------------------------------------ Flower Strategy API
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Outbox:
        self._round_started = time.perf_counter()
        self.exchange.waiting = 0.0
        self.roster.refresh(grid, server_round)
        self._global = record_to_state(arrays, self.template)
        sends = [
            self._send(server_round, node, self.train_tensors(server_round, node, self._global))
            for node in self.train_sample(server_round)
        ]
        # a retried round's messages carry no evaluation: the first try closed the pending one
        evaluates = self.pending.server_round if self.pending is not None else None
        return self.exchange.outbox(server_round, MessageType.TRAIN, sends, "", evaluates)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        outcome = self.exchange.collect(replies)
        updates: list[ClientUpdate] = []
        for sent, reply in outcome.ok:
            node, payload = sent.node, reply.payload
            assert node is not None
            if payload is None:
                outcome.failed.append(Failure(sent, "malformed", "train reply holds no tensors"))
                self.exchange.forget(node.partition_id)
                continue
            if payload.digest != sent.digest:  # the client changed its mask (e.g. it pruned)
                self.on_client_masks(node, payload.masks)
            self.held[node.partition_id] = payload.digest
            update = ClientUpdate(node, payload.tensors, payload.masks, reply.metrics)
            updates.append(update)
            self.tables.add(reply_row(server_round, "train", node, update.metrics))
        self.exchange.record_failures(server_round, "train", outcome)
        if self.pending is not None and outcome.evaluate_round == self.pending.server_round:
            self._close_pending(outcome)
        if not updates:
            log.warning(
                "round %s: no training update arrived; the global model is unchanged", server_round
            )
            return None, None
        self._global = self.aggregate(server_round, updates, self._global)
        return state_to_record(self._global), MetricRecord({"clients": len(updates)})

    def _send(self, server_round: int, node: NodeInfo, tensors: dict[str, np.ndarray]) -> Send:
        """``tensors`` under the node's mask (``client_masks`` runs after the tensors hook)."""
        return Send.to(node, tensors, self.client_masks(server_round, node))

    def summary(self) -> None:
        log.info("fedticket %s: %s", self.name, self.config.to_dict())

    # ------------------------------------------------------------------ rounds and checkpoints
    def run_rounds(
        self, grid: Grid, arrays: dict[str, np.ndarray], first_round: int, num_rounds: int
    ) -> dict[str, np.ndarray]:
        """Rounds ``first_round`` to ``num_rounds`` (``strategies.rounds``); the final model."""
        return rounds.run_rounds(self, grid, arrays, first_round, num_rounds)

    @property
    def checkpoint_path(self) -> Path:
        return checkpointing.checkpoint_path(self.run_dir)

    def save_checkpoint(self, server_round: int, global_arrays: dict[str, np.ndarray]) -> None:
        """What the server needs to continue after ``server_round`` (the tables are on disk)."""
        checkpoint = checkpointing.Checkpoint(
            round=server_round,
            global_arrays=global_arrays,
            masks=self.masks,
            held=self.held,
            rng=self.roster.rng.bit_generator.state,
            reference_best=self.reference_best,
            extra=self.extra_state(),
        )
        checkpoint.write(self.checkpoint_path, self.config.config_hash(), self.name)
        self.checkpoint_round = server_round

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> dict[str, np.ndarray]:
        """Undo ``save_checkpoint`` (state, tables up to its round); the global model."""
        saved = checkpointing.Checkpoint.read(arrays, meta)
        self.masks, self.exchange.held = saved.masks, saved.held
        self.roster.rng.bit_generator.state = saved.rng
        self.reference_best = saved.reference_best
        self.restore_extra(*saved.extra)
        self.tables.restore(saved.round)
        self.checkpoint_round = saved.round
        return saved.global_arrays

    def extra_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Algorithm state a checkpoint must keep (arrays, JSON-able values)."""
        return {}, {}

    def check_extra(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """``CheckpointError`` naming the field unless ``restore_extra`` can use this state."""

    def restore_extra(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Inverse of ``extra_state``."""

    def write_results(self) -> None:
        self.tables.write(self.masks)
        if self.state_on_disk:
            checkpointing.write_state_key(self.run_dir, self.state_key)

    # ------------------------------------------------------------------ collaborators' state
    @property
    def nodes(self) -> dict[int, NodeInfo]:
        return self.roster.nodes

    @nodes.setter
    def nodes(self, nodes: dict[int, NodeInfo]) -> None:
        self.roster.nodes = nodes

    @property
    def rejected(self) -> dict[int, str]:
        return self.roster.rejected

    @property
    def held(self) -> dict[int, str]:
        return self.exchange.held

    @property
    def ledger(self) -> CommLedger:
        return self.tables.ledger

    @property
    def round_rows(self) -> list[dict]:
        return self.tables.round_rows

    @property
    def client_rows(self) -> list[dict]:
        return self.tables.client_rows
