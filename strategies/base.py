"""The strategy base: everything the server side of every algorithm shares.

``SparseStrategy`` implements Flower 1.39's ``Strategy`` (configure/aggregate for train and
evaluate) once. It learns which partition each node holds (a handshake), samples clients by
partition id with a seeded RNG, and builds **one message per node**: node k gets
``theta_global`` with each masked tensor reduced to its kept entries under k's own mask, and
the mask's positions only when k does not hold that mask yet (the server remembers each
client's mask digest; a cached mask costs 0 position bytes). Every message in both directions
goes into the ledger; failed, late or undecodable replies become recorded failures, never
crashes; the results tables are rewritten after every round.

An algorithm subclasses it and overrides only its steps: ``client_masks`` (the mask node k
trains under; None = dense), ``aggregate`` (replies -> new global model) and, if it needs,
``train_tensors`` / ``evaluate_tensors`` and ``on_client_masks`` (a client changed its mask).
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedticket.config import RunConfig
from fedticket.learn.eval_protocols import PROTOCOLS, running_best
from fedticket.learn.global_evaluator import GlobalEvaluator
from fedticket.learn.train import EvalStats
from fedticket.sparse.masks import Masks, mask_digest
from fedticket.store.checkpoints import (
    masks_from_arrays,
    masks_to_arrays,
    split_prefix,
    write_archive,
)
from fedticket.store.results import RunDirectory, atomic_write_bytes
from fedticket.wire.ledger import CommLedger
from fedticket.wire.protocol import (
    ARRAYS,
    CONFIG,
    DEVICE_CLASS,
    DEVICE_ERROR,
    NUM_EXAMPLES,
    NUM_PARTITIONS,
    NUM_TEST,
    NUM_TRAIN,
    PARTITION_ID,
    PAYLOAD,
    STATE_KEY,
    TORCH_DEVICE,
    Instructions,
)
from fedticket.wire.records import (
    dense_bytes,
    encode_payload,
    message_bytes,
    payload_bytes,
    position_bytes,
    record_to_state,
    state_to_record,
)
from strategies.replies import CheckedReply, Expected, InvalidReply, MetricSpec, check_reply
from strategies.reporting import (
    CLIENT_PROTOCOL_COLUMNS,
    ClientRow,
    log_progress,
    restore_tables,
    round_summary,
    write_tables,
)

log = logging.getLogger("flwr")  # Flower's handlers print it in `flwr run --stream`

STRATEGIES: dict[str, type[SparseStrategy]] = {}
STATE_KEY_FILE = "client-state-key"


def register_strategy(name: str) -> Callable[[type[SparseStrategy]], type[SparseStrategy]]:
    def wrap(cls: type[SparseStrategy]) -> type[SparseStrategy]:
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return wrap


class NoClientsError(RuntimeError):
    """Too few healthy clients to run; the message says which and how to fix it."""


@dataclass(frozen=True)
class NodeInfo:
    node_id: int
    partition_id: int
    num_train: int
    num_test: int
    link_up_mbps: float = 0.0
    link_down_mbps: float = 0.0
    link_latency_ms: float = 0.0
    density_level: float = 1.0  # the node's budget as a share of the target density
    device_class: str = "simulated"
    num_partitions: int = 0

    def transfer_seconds(self, nbytes: int, direction: str) -> float:
        """Estimated time on this node's link (NaN when no link model is set)."""
        mbps = self.link_down_mbps if direction == "down" else self.link_up_mbps
        if mbps <= 0:
            return math.nan
        return self.link_latency_ms / 1000 + nbytes * 8 / (mbps * 1e6)


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


@dataclass
class _Sent:
    message: Message
    node: NodeInfo | None
    node_id: int
    dense: int
    digest: str = ""
    masks: Masks | None = None  # what the node holds once it has this message


@dataclass
class _Outcome:
    """Replies of one send: the checked good ones, and (node, pid, status, reason) for the
    others."""

    ok: list[tuple[_Sent, CheckedReply]] = field(default_factory=list)
    failed: list[tuple[int, int, str, str]] = field(default_factory=list)


def _clean_reason(reason: str) -> str:
    """Flower's simulation wraps client exceptions in a Ray traceback with ANSI colours;
    keep the last meaningful line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", reason or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:300]
    return (lines[-1] if lines else "no reason given")[:300]


class SparseStrategy(Strategy):
    """Base of every fedticket strategy (see the module docstring).

    Parameters
    ----------
    config : RunConfig
        The validated run configuration.
    template : dict[str, np.ndarray]
        The model's tensors (names, shapes, dtypes): what every payload must decode to.
    run_dir : RunDirectory
        Where the results tables go after every round.
    prunable : list[str]
        Names of the tensors that masks may cover (conv and linear weights).
    """

    name: ClassVar[str] = ""
    #: True: BatchNorm tensors stay on the clients and are left out of ``template`` and of
    #: every message (FedLTN); must match the client's ``FederatedClient.local_batchnorm``.
    local_batchnorm: ClassVar[bool] = False
    #: metrics the algorithm's clients add to the base ones (``strategies.replies``); metrics
    #: named nowhere are dropped unread
    train_metrics: ClassVar[Mapping[str, MetricSpec]] = {}
    evaluate_metrics: ClassVar[Mapping[str, MetricSpec]] = {}

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
        self.ledger = CommLedger()
        self.nodes: dict[int, NodeInfo] = {}
        self.rejected: dict[int, str] = {}
        self.rng = np.random.default_rng([config.seed, 0x5A4D])
        self.masks: dict[int, Masks] = {}  # partition id -> the mask the client trains under
        self.held: dict[int, str] = {}  # partition id -> mask digest the client is known to hold
        self.round_rows: list[dict] = []
        self.client_rows: list[dict] = []
        self._outbox: list[_Sent] = []
        self._global: dict[str, np.ndarray] = {}
        self._round_started = 0.0
        self._run_started = time.perf_counter()
        self._waiting = 0.0  # seconds of this round spent waiting for client replies
        self.checkpoint_round = 0  # the last round a checkpoint holds
        #: scores the ``global`` protocol; set by the ServerApp once it knows the partitions
        self.global_evaluator: GlobalEvaluator | None = None
        self.reference_best: dict[int, float] = {}  # partition id -> best-ever reported
        #: names this run's client state snapshots on the clients (``clients.state_location``)
        self.state_key = read_state_key(run_dir) or secrets.token_hex(8)

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
        messages = [
            self._message(node.node_id, node, MessageType.TRAIN, 0, tensors, masks, stage)
            for node, tensors, masks in sends
        ]
        outcome = self._collect(0, "train", self._send_and_receive(grid, messages))
        self._record_failures(0, "train", outcome)
        return [(sent.node, reply) for sent, reply in outcome.ok if sent.node is not None]

    def round_extras(self, server_round: int) -> dict[str, float]:
        """Algorithm-specific columns for this round's ``rounds.parquet`` row."""
        return {}

    @abstractmethod
    def aggregate(
        self, server_round: int, updates: list[ClientUpdate], global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The new global model from this round's decoded updates (never empty)."""

    # ------------------------------------------------------------------ nodes
    def connect(self, grid: Grid) -> None:
        """Wait for ``min-available-clients`` nodes and learn their partitions (a QUERY round
        that also loads each client's data, so data errors surface before any training)."""
        deadline = time.monotonic() + self.config.round_timeout
        while len(grid.get_node_ids()) < self.config.min_available_clients:
            if time.monotonic() > deadline:
                raise NoClientsError(
                    f"only {len(grid.get_node_ids())} of min-available-clients="
                    f"{self.config.min_available_clients} nodes connected after "
                    f"{self.config.round_timeout:.0f} s; "
                    "start more SuperNodes or lower min-available-clients"
                )
            time.sleep(1.0)
        self._handshake(grid, sorted(grid.get_node_ids()))
        self._leave_out_shared_partitions()
        if len(self.nodes) < self.config.min_available_clients:
            reasons = "; ".join(f"node {n}: {r}" for n, r in list(self.rejected.items())[:3])
            raise NoClientsError(
                f"{len(self.nodes)} healthy clients, "
                f"min-available-clients={self.config.min_available_clients}. "
                f"Rejected: {reasons or 'none'}"
            )

    def _leave_out_shared_partitions(self) -> None:
        """Nodes that claim the same partition at connect time are all left out: the server
        cannot tell which one holds it (a misconfigured device, or one posing as another),
        and one such node must not stop the run."""
        claims = Counter(n.partition_id for n in self.nodes.values())
        for node_id, node in list(self.nodes.items()):
            if claims[node.partition_id] > 1:
                reason = (
                    f"{claims[node.partition_id]} nodes claim partition-id {node.partition_id}; "
                    'give each SuperNode its own (--node-config "partition-id=K ...")'
                )
                del self.nodes[node_id]
                self._reject(0, node_id, "invalid", reason, node.partition_id)

    def _reject(
        self, server_round: int, node_id: int, status: str, reason: str, partition_id: int = -1
    ) -> None:
        """Leave node ``node_id`` out of the run: a failure row (phase ``query``) and a log line."""
        self.rejected[node_id] = f"{status}: {reason}"
        log.error("node %s left out of the run (%s): %s", node_id, status, reason)
        self._client_row(server_round, "query", node_id, partition_id, None, status, reason)

    def _client_row(
        self,
        server_round: int,
        phase: str,
        node_id: int,
        partition_id: int,
        node: NodeInfo | None,
        status: str = "ok",
        reason: str = "",
        **measures: float | None,
    ) -> None:
        row = ClientRow(
            server_round,
            phase,
            node_id,
            partition_id,
            node.device_class if node else "",
            node.density_level if node else math.nan,
            status,
            reason,
            measures,
        )
        self.client_rows.append(row.as_dict())

    def _handshake(
        self, grid: Grid, node_ids: list[int], rejoin: bool = False, server_round: int = 0
    ) -> None:
        messages = [self._message(node_id, None, MessageType.QUERY, 0) for node_id in node_ids]
        replies = grid.send_and_receive(messages, timeout=self.config.round_timeout)
        outcome = self._collect(0, "query", replies)
        devices: Counter[str] = Counter()
        for sent, reply in outcome.ok:
            described, m = reply.node or {}, reply.metrics
            if DEVICE_ERROR in described:
                reason = f"node {sent.node_id}: {described[DEVICE_ERROR]}"
                if not rejoin:  # the run's device is missing: a config error, stop before training
                    raise NoClientsError(reason)
                self._reject(server_round, sent.node_id, "error", reason)  # a late node only
                continue
            if m[PARTITION_ID] >= m[NUM_PARTITIONS]:
                reason = (
                    f"partition-id {m[PARTITION_ID]} is not below its "
                    f"num-partitions {m[NUM_PARTITIONS]}"
                )
                self._reject(server_round, sent.node_id, "invalid", reason)
                continue
            node = NodeInfo(
                sent.node_id,
                int(m[PARTITION_ID]),
                int(m[NUM_TRAIN]),
                int(m[NUM_TEST]),
                float(m.get("link-up-mbps", 0.0)),
                float(m.get("link-down-mbps", 0.0)),
                float(m.get("link-latency-ms", 0.0)),
                float(m.get("density-level", 1.0)),
                described.get(DEVICE_CLASS, ""),
                int(m[NUM_PARTITIONS]),
            )
            devices[described.get(TORCH_DEVICE, "?")] += 1
            if rejoin:
                self._forget_partition(node.partition_id, node.node_id)
            self.nodes[node.node_id] = node
        if devices:
            log.info(
                "fedticket: clients train on %s",
                ", ".join(f"{d} (x{n})" for d, n in devices.items()),
            )
        for node_id, _pid, status, reason in outcome.failed:
            self._reject(server_round, node_id, status, reason)

    def _forget_partition(self, partition_id: int, new_node_id: int) -> None:
        """A node (re)joined with ``partition_id``: drop an older node holding it (a restarted
        SuperNode gets a new node id) and resend its mask, which the new process lacks."""
        for old_id, old in list(self.nodes.items()):
            if old.partition_id == partition_id and old_id != new_node_id:
                del self.nodes[old_id]
                log.warning(
                    "partition %s rejoined as node %s (was node %s): its mask is resent",
                    partition_id,
                    new_node_id,
                    old_id,
                )
        self.held.pop(partition_id, None)

    def _refresh_nodes(self, grid: Grid, server_round: int) -> None:
        """Handshake nodes that connected since the last round; forget nodes that left."""
        connected = set(grid.get_node_ids())
        new = sorted(connected - set(self.nodes) - set(self.rejected))
        if new:
            self._handshake(grid, new, rejoin=True, server_round=server_round)
        for gone in set(self.nodes) - connected:
            node = self.nodes.pop(gone)
            self.held.pop(node.partition_id, None)
            log.warning("node %s (partition %s) disconnected", gone, node.partition_id)

    def sample(self, fraction: float, minimum: int) -> list[NodeInfo]:
        """Sample nodes by partition id (node ids are random per run; partition ids are not)."""
        available = sorted(self.nodes.values(), key=lambda n: n.partition_id)
        count = min(len(available), max(int(fraction * len(available)), minimum))
        if count == 0:
            return []
        picked = self.rng.choice(len(available), size=count, replace=False)
        return [available[i] for i in sorted(picked)]

    # ------------------------------------------------------------------ messages and ledger
    def _message(
        self,
        node_id: int,
        node: NodeInfo | None,
        message_type: str,
        server_round: int,
        tensors: dict[str, np.ndarray] | None = None,
        masks: Masks | None = None,
        stage: str = "",
    ) -> Message:
        disk = self.state_on_disk
        header = Instructions(
            server_round,
            self.name,
            self.state_key if disk else None,
            self.checkpoint_round if disk else None,
            stage,
        )
        content = RecordDict({CONFIG: ConfigRecord(header.to_dict())})
        digest = mask_digest(masks)
        if tensors is not None:
            send_masks = node is None or self.held.get(node.partition_id) != digest
            record, header = encode_payload(
                tensors,
                masks,
                send_masks=send_masks,
                value_dtype=self.config.value_dtype,
                compression=self.config.value_compression,
            )
            content[ARRAYS], content[PAYLOAD] = record, header
        message = Message(
            content, dst_node_id=node_id, message_type=message_type, group_id=str(server_round)
        )
        dense = dense_bytes(tensors) if tensors is not None else 0
        self._outbox.append(_Sent(message, node, node_id, dense, digest, masks))
        return message

    def _record(
        self,
        server_round: int,
        sent: _Sent,
        message: Message,
        direction: str,
        kind: str,
        dense: int,
    ) -> None:
        arrays = message.content.get(ARRAYS) if message.has_content() else None
        header = message.content.get(PAYLOAD) if message.has_content() else None
        if not isinstance(arrays, ArrayRecord) or not isinstance(header, ConfigRecord):
            arrays, header = None, None  # a malformed reply: its message bytes still count
        size = message_bytes(message)
        node = sent.node
        self.ledger.record(
            round=server_round,
            node_id=sent.node_id,
            partition_id=node.partition_id if node else -1,
            direction=direction,
            kind=kind,
            payload_bytes=payload_bytes(arrays),
            position_bytes=position_bytes(arrays, header),
            message_bytes=size,
            dense_bytes=dense,
            transfer_seconds=node.transfer_seconds(size, direction) if node else math.nan,
        )

    def _collect(self, server_round: int, kind: str, replies: Iterable[Message]) -> _Outcome:
        """Ledger rows for what was sent and what came back; sort replies into ok / failed."""
        sent, self._outbox = self._outbox, []
        by_id = {s.message.metadata.message_id: s for s in sent}
        for s in sent:  # message ids are set once Flower has pushed them
            self._record(server_round, s, s.message, "down", kind, s.dense)
        outcome, answered = _Outcome(), set()

        def sent_order(reply: Message) -> tuple[int, int]:
            s = by_id.get(reply.metadata.reply_to_message_id)
            return (s.node.partition_id if s and s.node else -1, s.node_id if s else -1)

        # replies arrive in any order; handle them by partition id so that every sum over
        # clients (aggregates, round means) is computed in one order and runs repeat bit for bit
        for reply in sorted(replies, key=sent_order):
            s = by_id.get(reply.metadata.reply_to_message_id)
            if s is None:
                log.warning("round %s: dropped a reply to an unknown message", server_round)
                continue
            answered.add(reply.metadata.reply_to_message_id)
            pid = s.node.partition_id if s.node else -1
            if reply.has_error():
                outcome.failed.append((s.node_id, pid, "error", _clean_reason(reply.error.reason)))
                continue
            has_arrays = isinstance(reply.content.get(ARRAYS), ArrayRecord)
            self._record(
                server_round, s, reply, "up", kind, self._dense_up(kind) if has_arrays else 0
            )
            try:
                outcome.ok.append((s, check_reply(reply, self._expected(kind, s))))
            except InvalidReply as exc:
                outcome.failed.append((s.node_id, pid, exc.status, str(exc)))
        for message_id, s in by_id.items():
            if message_id not in answered:
                pid = s.node.partition_id if s.node else -1
                reason = f"no reply within round-timeout={self.config.round_timeout:.0f} s"
                outcome.failed.append((s.node_id, pid, "timeout", reason))
        for _node_id, pid, _status, _reason in outcome.failed:
            self.held.pop(pid, None)  # the client's mask state is unknown now: resend it
        return outcome

    def _expected(self, kind: str, sent: _Sent) -> Expected:
        """What a reply to ``sent`` must look like (``strategies.replies``)."""
        if kind == "query" or sent.node is None:
            return Expected("query")
        node = sent.node
        handshake = {
            PARTITION_ID: node.partition_id,
            NUM_TRAIN: node.num_train,
            NUM_TEST: node.num_test,
        }
        extra = self.train_metrics if kind == "train" else self.evaluate_metrics
        return Expected(kind, handshake, self.template, sent.masks, extra)

    def _dense_up(self, kind: str) -> int:
        return dense_bytes(self.template) if kind == "train" else 0

    def _record_failures(self, server_round: int, phase: str, outcome: _Outcome) -> None:
        for node_id, pid, status, reason in outcome.failed:
            log.warning(
                "round %s %s: node %s (partition %s) %s: %s",
                server_round,
                phase,
                node_id,
                pid,
                status,
                reason,
            )
            if "stale mask state" in reason:
                log.warning(
                    "partition %s lost its client state (a restarted SuperNode?); "
                    "its mask is resent next time",
                    pid,
                )
            node = next((n for n in self.nodes.values() if n.partition_id == pid), None)
            self._client_row(server_round, phase, node_id, pid, node, status, reason)

    # ------------------------------------------------------------------ Flower Strategy API
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._round_started = time.perf_counter()
        self._waiting = 0.0
        self._refresh_nodes(grid, server_round)
        self._global = record_to_state(arrays, self.template)
        messages = []
        for node in self.train_sample(server_round):
            tensors = self.train_tensors(server_round, node, self._global)
            masks = self.client_masks(server_round, node)
            messages.append(
                self._message(node.node_id, node, MessageType.TRAIN, server_round, tensors, masks)
            )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        outcome = self._collect(server_round, "train", replies)
        updates: list[ClientUpdate] = []
        for sent, reply in outcome.ok:
            node, payload = sent.node, reply.payload
            assert node is not None
            if payload is None:
                outcome.failed.append(
                    (node.node_id, node.partition_id, "malformed", "train reply holds no tensors")
                )
                self.held.pop(node.partition_id, None)
                continue
            if payload.digest != sent.digest:  # the client changed its mask (e.g. it pruned)
                self.on_client_masks(node, payload.masks)
            self.held[node.partition_id] = payload.digest
            update = ClientUpdate(node, payload.tensors, payload.masks, reply.metrics)
            updates.append(update)
            self._client_row(
                server_round,
                "train",
                node.node_id,
                node.partition_id,
                node,
                num_examples=update.num_examples,
                train_loss=update.metrics.get("train-loss"),
                train_seconds=update.metrics.get("train-seconds"),
                client_seconds=update.metrics.get("client-seconds"),
                density=update.metrics.get("density"),
            )
        self._record_failures(server_round, "train", outcome)
        if not updates:
            log.warning(
                "round %s: no training update arrived; the global model is unchanged", server_round
            )
            return None, None
        self._global = self.aggregate(server_round, updates, self._global)
        return state_to_record(self._global), MetricRecord({"clients": len(updates)})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.config.fraction_evaluate <= 0 or not self.is_evaluation_round(server_round):
            return []
        global_arrays = record_to_state(arrays, self.template)
        messages = []
        for node in self.sample(self.config.fraction_evaluate, self.config.min_evaluate_clients):
            tensors = self.evaluate_tensors(server_round, node, global_arrays)
            masks = self.client_masks(server_round, node)
            messages.append(
                self._message(
                    node.node_id, node, MessageType.EVALUATE, server_round, tensors, masks
                )
            )
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        outcome = self._collect(server_round, "evaluate", replies)
        for sent, reply in outcome.ok:
            node, m = sent.node, dict(reply.metrics)
            assert node is not None
            self.held[node.partition_id] = sent.digest
            m["reference-accuracy"] = self.keep_reference_best(node.partition_id, m)
            protocols = {c: m.get(c.replace("_", "-")) for c in CLIENT_PROTOCOL_COLUMNS}
            self._client_row(
                server_round,
                "evaluate",
                node.node_id,
                node.partition_id,
                node,
                num_examples=int(m.get(NUM_EXAMPLES, 0)),
                **protocols,
                density=m.get("density"),
                client_seconds=m.get("client-seconds"),
            )
        self._record_failures(server_round, "evaluate", outcome)
        started_global = time.perf_counter()
        global_stats = (
            self.evaluate_global()
            if self.is_evaluation_round(server_round)
            else EvalStats(math.nan, math.nan, 0)
        )
        now = time.perf_counter()
        summary = (
            round_summary(server_round, self.client_rows, self.ledger, now - self._round_started)
            | {"global_accuracy": global_stats.accuracy, "global_loss": global_stats.loss}
            | {"seconds_clients": self._waiting, "seconds_global": now - started_global}
            | {"finished_s": now - self._run_started}
            | self.round_extras(server_round)
        )
        self.round_rows.append(summary)
        self.write_results()
        log_progress(summary, self.config.num_rounds)
        headline = [f"{p}_accuracy" for p in PROTOCOLS]
        return MetricRecord(
            {k.replace("_", "-"): summary[k] for k in headline if not math.isnan(summary[k])}
        )

    def keep_reference_best(self, partition_id: int, metrics: Mapping[str, float]) -> float:
        """The ``reference`` protocol's best-ever for a client, kept here too: a client whose
        state was lost (a restarted SuperNode, a resume with in-memory client state) restarts
        its own running maximum, the server's copy (checkpointed) carries it on."""
        reported = float(metrics.get("reference-accuracy", math.nan))
        best = running_best(self.reference_best.get(partition_id, math.nan), reported)
        self.reference_best[partition_id] = best
        return best

    def is_evaluation_round(self, server_round: int) -> bool:
        """Every ``evaluate-every`` rounds and after the last."""
        every, last = self.config.evaluate_every, self.config.num_rounds
        return server_round % every == 0 or server_round == last

    def global_model(self) -> dict[str, np.ndarray]:
        """The server's model that the ``global`` protocol scores (LotteryFL's code scores the
        unmasked theta_g, E4)."""
        return self._global

    def evaluate_global(self) -> EvalStats:
        """The ``global`` protocol: the server's model on the held-out test set of all classes;
        NaN without an evaluator (the server lacks the data) or a whole global model."""
        if self.global_evaluator is None or not self._global:
            return EvalStats(math.nan, math.nan, 0)
        return self.global_evaluator.evaluate(self.global_model())

    @property
    def state_on_disk(self) -> bool:
        """Clients keep their state in snapshot files (``client-state``; ``auto`` above
        ``client-state-threshold`` connected clients, where holding every client's state in
        the simulation's memory stops scaling)."""
        mode = self.config.client_state
        return mode == "disk" or (
            mode == "auto" and len(self.nodes) > self.config.client_state_threshold
        )

    # ------------------------------------------------------------------ rounds and checkpoints
    def run_rounds(
        self, grid: Grid, arrays: dict[str, np.ndarray], first_round: int, num_rounds: int
    ) -> dict[str, np.ndarray]:
        """Flower's ``Strategy.start`` loop (configure, send, aggregate; train then evaluate),
        owned here so that a run can start at a resumed round, retry a round that got fewer
        than ``min-train-replies`` replies, and checkpoint after a round."""
        config, record = self.config, state_to_record(arrays)
        for server_round in range(first_round, num_rounds + 1):
            for attempt in range(config.round_retries + 1):
                messages = self.configure_train(server_round, record, ConfigRecord(), grid)
                replies = self._send_and_receive(grid, messages)
                new, metrics = self.aggregate_train(server_round, replies)
                updates = int(metrics["clients"]) if metrics is not None else 0
                if updates >= config.min_train_replies:
                    break
                log.warning(
                    "round %s: %d of min-train-replies=%d training replies (try %d of %d)",
                    server_round,
                    updates,
                    config.min_train_replies,
                    attempt + 1,
                    config.round_retries + 1,
                )
            else:
                self.write_results()
                raise NoClientsError(
                    f"round {server_round}: fewer than min-train-replies="
                    f"{config.min_train_replies} clients replied in {config.round_retries + 1} "
                    "tries; see clients.parquet for why; fix the clients, lower "
                    "min-train-replies, or resume later (finished rounds are kept)"
                )
            if new is not None:
                record = new
            messages = self.configure_evaluate(server_round, record, ConfigRecord(), grid)
            replies = self._send_and_receive(grid, messages)
            self.aggregate_evaluate(server_round, replies)
            every = config.checkpoint_every
            if every and (server_round % every == 0 or server_round == num_rounds):
                self.save_checkpoint(server_round, record_to_state(record, self.template))
        return record_to_state(record, self.template)

    def _send_and_receive(self, grid: Grid, messages: Iterable[Message]) -> Iterable[Message]:
        """The grid's send-and-receive, timed: ``seconds_clients`` in the rounds table is this
        wait (client work, Flower's transport and scheduling); the rest of ``seconds`` is the
        server's own work."""
        started = time.perf_counter()
        try:
            return grid.send_and_receive(messages, timeout=self.config.round_timeout)
        finally:
            self._waiting += time.perf_counter() - started

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir.path / "checkpoint.npz"

    def save_checkpoint(self, server_round: int, global_arrays: dict[str, np.ndarray]) -> None:
        """Everything the server needs to continue after ``server_round`` (tables are already
        on disk up to it): global model, masks, held digests, RNG, algorithm state."""
        arrays = {f"global/{k}": v for k, v in global_arrays.items()}
        arrays |= masks_to_arrays("masks", self.masks)
        extra_arrays, extra_meta = self.extra_state()
        arrays |= {f"extra/{k}": v for k, v in extra_arrays.items()}
        meta = {
            "round": server_round,
            "config-hash": self.config.config_hash(),
            "algorithm": self.name,
            "held": {str(k): v for k, v in self.held.items()},
            "rng": self.rng.bit_generator.state,
            "reference-best": {str(k): v for k, v in self.reference_best.items()},
            "extra": extra_meta,
        }
        write_archive(self.checkpoint_path, arrays, meta)
        self.checkpoint_round = server_round

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> dict[str, np.ndarray]:
        """Undo ``save_checkpoint``: state, and the tables' rows up to its round. Returns the
        global model to continue from."""
        done = int(meta["round"])
        self.masks = masks_from_arrays("masks", arrays)
        self.held = {int(k): str(v) for k, v in meta["held"].items()}
        self.rng.bit_generator.state = meta["rng"]
        self.reference_best = {int(k): float(v) for k, v in meta.get("reference-best", {}).items()}
        self.restore_extra(split_prefix(arrays, "extra"), meta["extra"])
        self.round_rows, self.client_rows, self.ledger = restore_tables(self.run_dir, done)
        self.checkpoint_round = done
        return split_prefix(arrays, "global")

    def extra_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Algorithm state a checkpoint must keep (arrays, JSON-able values)."""
        return {}, {}

    def check_extra(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """``CheckpointError`` naming the field unless ``restore_extra`` can use this state
        (``extra`` meta, ``extra/`` arrays without the prefix); the ServerApp calls it through
        ``load_checkpoint`` before clients connect. Default: no state to check."""

    def restore_extra(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Inverse of ``extra_state``."""

    def summary(self) -> None:
        log.info("fedticket %s: %s", self.name, self.config.to_dict())

    def write_results(self) -> None:
        write_tables(self.run_dir, self.round_rows, self.client_rows, self.ledger, self.masks)
        if self.state_on_disk and read_state_key(self.run_dir) != self.state_key:
            atomic_write_bytes(self.run_dir.path / STATE_KEY_FILE, self.state_key.encode())


def read_state_key(run_dir: RunDirectory) -> str:
    """The client-state key a run directory already uses ("" when it has none): a resumed
    run's clients find their snapshots under it."""
    try:
        key = (run_dir.path / STATE_KEY_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return key if STATE_KEY.fullmatch(key) else ""
