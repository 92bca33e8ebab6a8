"""Messages to and from the clients: one message per node, every reply checked and counted.

Node k's message carries ``theta_global`` with each masked tensor reduced to its kept entries
under k's own mask, and the mask's positions only when k does not hold that mask yet (``held``:
partition id -> digest of the mask the client is known to hold; a cached mask costs 0 position
bytes). What the server sent each node travels with the messages (``Outbox``) and on with their
replies (``Delivery``), so that replies are matched, checked (``strategies.replies``) and
counted in the ledger, both directions, in one place. Failed, late or undecodable replies
become failures and failure rows, never crashes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedticket.config import RunConfig
from fedticket.sparse.masks import Masks, mask_digest
from fedticket.strategies.broadcast import record_broadcast
from fedticket.strategies.deployed_pull import send_and_receive
from fedticket.strategies.nodes import NodeInfo, client_row
from fedticket.strategies.replies import (
    CheckedReply,
    Expected,
    InvalidReply,
    MetricSpec,
    check_reply,
)
from fedticket.strategies.reporting import RunTables
from fedticket.wire.protocol import (
    ARRAYS,
    CONFIG,
    NUM_TEST,
    NUM_TRAIN,
    PARTITION_ID,
    PAYLOAD,
    Instructions,
)
from fedticket.wire.records import (
    dense_bytes,
    encode_payload,
    message_bytes,
    payload_bytes,
    position_bytes,
)

log = logging.getLogger("flwr")  # Flower's handlers print it in `flwr run --stream`


@dataclass(frozen=True)
class Send:
    """What node ``node_id`` gets: ``tensors`` under ``masks``; no tensors is a handshake
    (``node`` is not known yet)."""

    node_id: int
    node: NodeInfo | None = None
    tensors: dict[str, np.ndarray] | None = None
    masks: Masks | None = None

    @classmethod
    def to(cls, node: NodeInfo, tensors: dict[str, np.ndarray], masks: Masks | None) -> Send:
        return cls(node.node_id, node, tensors, masks)


@dataclass(frozen=True)
class Sent:
    """A built message and what the server must know of it when its reply comes."""

    message: Message
    node: NodeInfo | None
    node_id: int
    dense: int  # the tensors' bytes as dense fp32 (the ledger's baseline)
    digest: str = ""
    masks: Masks | None = None  # what the node holds once it has this message

    @property
    def partition_id(self) -> int:
        return self.node.partition_id if self.node else -1


@dataclass(frozen=True)
class Failure:
    """A message without a usable reply; ``status`` is error, timeout, malformed or invalid."""

    sent: Sent
    status: str
    reason: str


@dataclass
class Outcome:
    """Replies of one send: the checked good ones, and the failures."""

    ok: list[tuple[Sent, CheckedReply]] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    evaluate_round: int | None = None  # the earlier round these train replies also evaluated


@dataclass(frozen=True)
class Outbox:
    """One send: its round, its kind (the message type: query, train or evaluate) and what
    each node was sent. Iterating gives the messages (Flower's ``configure_*`` result).
    ``evaluate_round``: the earlier round whose evaluation these train messages carry."""

    server_round: int
    kind: str
    sent: list[Sent]
    evaluate_round: int | None = None

    def __iter__(self) -> Iterator[Message]:
        return (s.message for s in self.sent)


@dataclass(frozen=True)
class Delivery:
    """The replies to an ``Outbox``, with it. Iterating gives the replies (what Flower's
    ``aggregate_*`` receives)."""

    outbox: Outbox
    replies: Iterable[Message]

    def __iter__(self) -> Iterator[Message]:
        return iter(self.replies)


def _clean_reason(reason: str) -> str:
    """Flower's simulation wraps client exceptions in a Ray traceback with ANSI colours;
    keep the last meaningful line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", reason or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:300]
    return (lines[-1] if lines else "no reason given")[:300]


class Exchange:
    """Builds, sends and collects the run's messages (see the module docstring).

    Parameters
    ----------
    config : RunConfig
        The round timeout and the value codec (``value-dtype``, ``value-compression``).
    template : dict[str, np.ndarray]
        The model's tensors: what every train reply's payload must decode to.
    tables : RunTables
        Gets a ledger row per message in either direction and a client row per failure.
    instructions : Callable[[int, str], Instructions]
        The header of a message of (round, stage): what a client is told besides the tensors.
    metrics : Mapping[str, Mapping[str, MetricSpec]]
        By kind (train, evaluate): the metrics the algorithm's clients add to the base ones.
    broadcast : bool
        Count each train and evaluate send as one downlink broadcast (``strategies.broadcast``).
    """

    def __init__(
        self,
        config: RunConfig,
        template: Mapping[str, np.ndarray],
        tables: RunTables,
        instructions: Callable[[int, str], Instructions],
        metrics: Mapping[str, Mapping[str, MetricSpec]],
        broadcast: bool = False,
    ) -> None:
        self.config = config
        self.template = template
        self.tables = tables
        self.instructions = instructions
        self.metrics = metrics
        self.broadcast = broadcast  # train and evaluate models go down as one broadcast
        self.held: dict[int, str] = {}  # partition id -> mask digest the client is known to hold
        #: seconds spent in timed sends since the strategy last set it to 0 (a round's start)
        self.waiting = 0.0

    def send(
        self,
        grid: Grid,
        server_round: int,
        kind: str,
        sends: Iterable[Send],
        stage: str = "",
        timed: bool = True,
    ) -> Outcome:
        """Build, send and collect one exchange (``outbox``, ``deliver``, ``collect``)."""
        outbox = self.outbox(server_round, kind, sends, stage)
        return self.collect(self.deliver(grid, outbox, timed))

    def outbox(
        self,
        server_round: int,
        kind: str,
        sends: Iterable[Send],
        stage: str = "",
        evaluate_round: int | None = None,
    ) -> Outbox:
        """One message per ``Send``; ``stage`` names an algorithm's extra stage ("" for none);
        ``evaluate_round``: train messages that first run that round's evaluation."""
        header = self.instructions(server_round, stage)
        if evaluate_round is not None:
            header = dataclasses.replace(header, evaluate_round=evaluate_round)
        sent = [self._message(header, kind, send) for send in sends]
        return Outbox(server_round, kind, sent, evaluate_round)

    def deliver(self, grid: Grid, outbox: Outbox, timed: bool = True) -> Delivery:
        """The grid's send-and-receive. ``timed``: the wait counts in ``waiting``, which is
        ``seconds_clients`` in the rounds table (client work, Flower's transport and
        scheduling); the rest of a round's ``seconds`` is the server's own work."""
        started = time.perf_counter()
        try:
            replies = send_and_receive(grid, list(outbox), self.config.round_timeout)
        finally:
            if timed:
                self.waiting += time.perf_counter() - started
        return Delivery(outbox, replies)

    def collect(self, delivery: Iterable[Message]) -> Outcome:
        """Ledger rows for what was sent and what came back; the replies sorted into checked
        good ones and failures. Needs the ``Delivery`` from ``deliver``: Flower's own
        ``Strategy.start`` loop, which passes bare replies, is not supported (``run_rounds``)."""
        if not isinstance(delivery, Delivery):
            raise TypeError(
                "replies must come as the Delivery from Exchange.deliver (strategies.rounds "
                f"runs the rounds, not Flower's Strategy.start); got {type(delivery).__name__}"
            )
        server_round, kind = delivery.outbox.server_round, delivery.outbox.kind
        sent = delivery.outbox.sent
        by_id = {s.message.metadata.message_id: s for s in sent}
        if self.broadcast and kind != "query":
            record_broadcast(self.tables.ledger, server_round, kind, sent)
        else:
            for s in sent:  # message ids are set once Flower has pushed them
                self._record(server_round, s, s.message, "down", kind, s.dense)
        outcome, answered = Outcome(evaluate_round=delivery.outbox.evaluate_round), set()

        def sent_order(reply: Message) -> tuple[int, int]:
            s = by_id.get(reply.metadata.reply_to_message_id)
            return (s.partition_id if s else -1, s.node_id if s else -1)

        # replies arrive in any order; handle them by partition id so that every sum over
        # clients (aggregates, round means) is computed in one order and runs repeat bit for bit
        for reply in sorted(delivery.replies, key=sent_order):
            s = by_id.get(reply.metadata.reply_to_message_id)
            if s is None:
                log.warning("round %s: dropped a reply to an unknown message", server_round)
                continue
            answered.add(reply.metadata.reply_to_message_id)
            if reply.has_error():
                outcome.failed.append(Failure(s, "error", _clean_reason(reply.error.reason)))
                continue
            has_arrays = isinstance(reply.content.get(ARRAYS), ArrayRecord)
            self._record(
                server_round, s, reply, "up", kind, self._dense_up(kind) if has_arrays else 0
            )
            try:
                expected = self._expected(kind, s, delivery.outbox.evaluate_round is not None)
                outcome.ok.append((s, check_reply(reply, expected)))
            except InvalidReply as exc:
                outcome.failed.append(Failure(s, exc.status, str(exc)))
        for message_id, s in by_id.items():
            if message_id not in answered:
                reason = f"no reply within round-timeout={self.config.round_timeout:.0f} s"
                outcome.failed.append(Failure(s, "timeout", reason))
        for failure in outcome.failed:
            self.forget(failure.sent.partition_id)  # its mask state is unknown now: resend it
        return outcome

    def forget(self, partition_id: int) -> None:
        """The client of ``partition_id`` may not hold its mask: the next message carries it."""
        self.held.pop(partition_id, None)

    def record_failures(self, server_round: int, phase: str, outcome: Outcome) -> None:
        """A log line and a client row per failure."""
        for failure in outcome.failed:
            sent, pid = failure.sent, failure.sent.partition_id
            log.warning(
                "round %s %s: node %s (partition %s) %s: %s",
                server_round,
                phase,
                sent.node_id,
                pid,
                failure.status,
                failure.reason,
            )
            if "stale mask state" in failure.reason:
                log.warning(
                    "partition %s lost its client state (a restarted SuperNode?); "
                    "its mask is resent next time",
                    pid,
                )
            row = client_row(
                server_round, phase, sent.node_id, pid, sent.node, failure.status, failure.reason
            )
            self.tables.add(row)

    def _message(self, header: Instructions, kind: str, send: Send) -> Sent:
        content = RecordDict({CONFIG: ConfigRecord(header.to_dict())})
        digest = mask_digest(send.masks)
        if send.tensors is not None:
            node = send.node
            # a broadcast is one transmission: its positions go to every receiver alike
            send_masks = (
                self.broadcast or node is None or self.held.get(node.partition_id) != digest
            )
            record, payload = encode_payload(
                send.tensors,
                send.masks,
                send_masks=send_masks,
                value_dtype=self.config.value_dtype,
                compression=self.config.value_compression,
            )
            content[ARRAYS], content[PAYLOAD] = record, payload
        message = Message(
            content,
            dst_node_id=send.node_id,
            message_type=kind,
            group_id=str(header.server_round),
        )
        dense = dense_bytes(send.tensors) if send.tensors is not None else 0
        return Sent(message, send.node, send.node_id, dense, digest, send.masks)

    def _record(
        self,
        server_round: int,
        sent: Sent,
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
        self.tables.ledger.record(
            round=server_round,
            node_id=sent.node_id,
            partition_id=sent.partition_id,
            direction=direction,
            kind=kind,
            payload_bytes=payload_bytes(arrays),
            position_bytes=position_bytes(arrays, header),
            message_bytes=size,
            dense_bytes=dense,
            transfer_seconds=node.transfer_seconds(size, direction) if node else math.nan,
        )

    def _expected(self, kind: str, sent: Sent, evaluates: bool = False) -> Expected:
        """What a reply to ``sent`` must look like (``strategies.replies``); ``evaluates``: it
        must carry an evaluation too."""
        if kind == "query" or sent.node is None:
            return Expected("query")
        node = sent.node
        handshake = {
            PARTITION_ID: node.partition_id,
            NUM_TRAIN: node.num_train,
            NUM_TEST: node.num_test,
        }
        evaluation = self.metrics["evaluate"] if evaluates else None
        return Expected(kind, handshake, self.template, sent.masks, self.metrics[kind], evaluation)

    def _dense_up(self, kind: str) -> int:
        return dense_bytes(self.template) if kind == "train" else 0
