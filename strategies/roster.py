"""The node roster: which nodes take part, learned in a QUERY handshake, and which were left
out and why.

The handshake also loads each client's data, so data errors surface before any training. Two
nodes that claim one partition are both left out (the server cannot tell which one holds it); a
node that rejoins with a known partition replaces the old one. Clients are sampled by partition
id with a seeded RNG (node ids are random per run), so that runs repeat.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter

import numpy as np
from flwr.app import MessageType
from flwr.serverapp import Grid

from fedticket.config import RunConfig
from fedticket.strategies.exchange import Exchange, Send
from fedticket.strategies.nodes import NoClientsError, NodeInfo, client_row
from fedticket.strategies.replies import CheckedReply
from fedticket.strategies.reporting import RunTables
from fedticket.wire.protocol import (
    BROADCAST_DOMAIN,
    DEVICE_CLASS,
    DEVICE_ERROR,
    NUM_PARTITIONS,
    NUM_TEST,
    NUM_TRAIN,
    PARTITION_ID,
    TORCH_DEVICE,
)

log = logging.getLogger("flwr")  # Flower's handlers print it in `flwr run --stream`


class NodeRoster:
    """The healthy nodes by node id (``nodes``), the rejected ones with why (``rejected``) and
    the sampling RNG (``rng``, checkpointed). Handshakes go through ``exchange`` (which forgets
    a replaced node's mask); a rejected node gets a ``query`` failure row in ``tables``."""

    def __init__(
        self, config: RunConfig, exchange: Exchange, tables: RunTables, budgets: bool = False
    ) -> None:
        self.config = config
        self.budgets = budgets  # False: a node's density level is NaN (no budget applies)
        self.exchange = exchange
        self.tables = tables
        self.nodes: dict[int, NodeInfo] = {}
        self.rejected: dict[int, str] = {}  # node id -> "status: reason"
        self.rng = np.random.default_rng([config.seed, 0x5A4D])

    def connect(self, grid: Grid) -> None:
        """Wait for ``min-available-clients`` nodes and learn their partitions."""
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

    def refresh(self, grid: Grid, server_round: int) -> None:
        """Handshake nodes that connected since the last round; forget nodes that left."""
        connected = set(grid.get_node_ids())
        new = sorted(connected - set(self.nodes) - set(self.rejected))
        if new:
            self._handshake(grid, new, rejoin=True, server_round=server_round)
        for gone in set(self.nodes) - connected:
            node = self.nodes.pop(gone)
            self.exchange.forget(node.partition_id)
            log.warning("node %s (partition %s) disconnected", gone, node.partition_id)

    def sample(self, fraction: float, minimum: int) -> list[NodeInfo]:
        """Sample nodes by partition id (node ids are random per run; partition ids are not)."""
        available = sorted(self.nodes.values(), key=lambda n: n.partition_id)
        count = min(len(available), max(int(fraction * len(available)), minimum))
        if count == 0:
            return []
        picked = self.rng.choice(len(available), size=count, replace=False)
        return [available[i] for i in sorted(picked)]

    def reject(
        self, server_round: int, node_id: int, status: str, reason: str, partition_id: int = -1
    ) -> None:
        """Leave node ``node_id`` out of the run: a failure row (phase ``query``) and a log line."""
        self.rejected[node_id] = f"{status}: {reason}"
        log.error("node %s left out of the run (%s): %s", node_id, status, reason)
        self.tables.add(
            client_row(server_round, "query", node_id, partition_id, None, status, reason)
        )

    def _handshake(
        self, grid: Grid, node_ids: list[int], rejoin: bool = False, server_round: int = 0
    ) -> None:
        """Admit the nodes whose QUERY reply is sound. ``rejoin``: late nodes after round 1, where
        a node without the run's device is left out instead of stopping the run."""
        queries = [Send(node_id) for node_id in node_ids]
        outcome = self.exchange.send(grid, 0, MessageType.QUERY, queries, timed=False)
        devices: Counter[str] = Counter()
        for sent, reply in outcome.ok:
            described = reply.node or {}
            if DEVICE_ERROR in described:
                reason = f"node {sent.node_id}: {described[DEVICE_ERROR]}"
                if not rejoin:  # the run's device is missing: a config error, stop before training
                    raise NoClientsError(reason)
                self.reject(server_round, sent.node_id, "error", reason)  # a late node only
                continue
            node = self._node(server_round, sent.node_id, reply)
            if node is None:
                continue
            devices[described.get(TORCH_DEVICE, "?")] += 1
            if rejoin:
                self._forget_partition(node.partition_id, node.node_id)
            self.nodes[node.node_id] = node
        if devices:
            log.info(
                "fedticket: clients train on %s",
                ", ".join(f"{d} (x{n})" for d, n in devices.items()),
            )
        for failure in outcome.failed:
            self.reject(server_round, failure.sent.node_id, failure.status, failure.reason)

    def _node(self, server_round: int, node_id: int, reply: CheckedReply) -> NodeInfo | None:
        """What a sound handshake reply says of its node; None (rejected) for a partition id
        outside its own num-partitions."""
        described, m = reply.node or {}, reply.metrics
        if m[PARTITION_ID] >= m[NUM_PARTITIONS]:
            reason = (
                f"partition-id {m[PARTITION_ID]} is not below its "
                f"num-partitions {m[NUM_PARTITIONS]}"
            )
            self.reject(server_round, node_id, "invalid", reason)
            return None
        return NodeInfo(
            node_id,
            int(m[PARTITION_ID]),
            int(m[NUM_TRAIN]),
            int(m[NUM_TEST]),
            float(m.get("link-up-mbps", 0.0)),
            float(m.get("link-down-mbps", 0.0)),
            float(m.get("link-latency-ms", 0.0)),
            float(m.get("density-level", 1.0)) if self.budgets else math.nan,
            described.get(DEVICE_CLASS, ""),
            int(m[NUM_PARTITIONS]),
            float(m.get("compute-slowdown", 0.0)),
            described.get(BROADCAST_DOMAIN, ""),
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
                self.reject(0, node_id, "invalid", reason, node.partition_id)

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
        self.exchange.forget(partition_id)
