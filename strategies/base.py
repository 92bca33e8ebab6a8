"""The strategy base: everything the server side of every algorithm shares.

``SparseStrategy`` implements Flower 1.39's ``Strategy`` (configure/aggregate for train and
evaluate) once: it learns which partition each node holds (a handshake), samples clients by
partition id with a seeded RNG, builds **one message per node** (so per-client payloads need no
override), records every message in the ledger, turns failed, late or malformed replies into
recorded failures instead of crashes, and writes the results tables after every round.
An algorithm subclasses it and overrides only its steps: ``train_payload`` (what node k gets),
``aggregate`` (how replies become the new global model) and, if it wants, ``evaluate_payload``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedticket.config import RunConfig
from fedticket.flower_io import (
    PayloadError,
    arrays_to_record,
    dense_bytes,
    message_bytes,
    payload_bytes,
    record_to_arrays,
)
from fedticket.ledger import CommLedger
from fedticket.results import RunDirectory

log = logging.getLogger("flwr")  # Flower's handlers print it in `flwr run --stream`

STRATEGIES: dict[str, type[SparseStrategy]] = {}

CLIENT_COLUMNS = [
    "round",
    "phase",
    "node_id",
    "partition_id",
    "status",
    "reason",
    "num_examples",
    "train_loss",
    "train_seconds",
    "global_loss",
    "global_accuracy",
    "personal_loss",
    "personal_accuracy",
    "density",
]


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


@dataclass(frozen=True)
class ClientUpdate:
    """One decoded training reply."""

    node: NodeInfo
    arrays: dict[str, np.ndarray]
    metrics: dict[str, float]

    @property
    def num_examples(self) -> int:
        return int(self.metrics.get("num-examples", 0))


@dataclass
class _Sent:
    message: Message
    node: NodeInfo | None
    node_id: int
    dense: int


@dataclass
class _Outcome:
    """Replies of one send: the good ones, and the nodes that failed with why."""

    ok: list[tuple[NodeInfo, Message]] = field(default_factory=list)
    failed: list[tuple[int, int, str, str]] = field(
        default_factory=list
    )  # node, pid, status, reason


def _clean_reason(reason: str) -> str:
    """Flower's simulation wraps client exceptions in a Ray traceback with ANSI colours;
    keep the last meaningful line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", reason or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:300]
    return (lines[-1] if lines else "no reason given")[:300]


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class SparseStrategy(Strategy):
    """Base of every fedticket strategy (see the module docstring).

    Parameters
    ----------
    config : RunConfig
        The validated run configuration.
    template : dict[str, np.ndarray]
        The model's tensors (names, shapes, dtypes): what a reply must decode to.
    run_dir : RunDirectory
        Where the results tables go after every round.
    """

    name: ClassVar[str] = ""

    def __init__(
        self, config: RunConfig, template: dict[str, np.ndarray], run_dir: RunDirectory
    ) -> None:
        self.config = config
        self.template = {k: np.zeros_like(v) for k, v in template.items()}
        self.dense_model_bytes = dense_bytes(template)
        self.run_dir = run_dir
        self.ledger = CommLedger()
        self.nodes: dict[int, NodeInfo] = {}
        self.rejected: dict[int, str] = {}
        self.rng = np.random.default_rng([config.seed, 0x5A4D])
        self.round_rows: list[dict] = []
        self.client_rows: list[dict] = []
        self._outbox: list[_Sent] = []
        self._global: dict[str, np.ndarray] = {}
        self._round_started = 0.0

    # ------------------------------------------------------------------ algorithm steps
    def train_payload(
        self, server_round: int, node: NodeInfo, global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Tensors node ``node`` receives for training (default: the dense global model)."""
        return global_arrays

    def evaluate_payload(
        self, server_round: int, node: NodeInfo, global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Tensors node ``node`` receives for evaluation (default: the dense global model)."""
        return global_arrays

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
        if len(self.nodes) < self.config.min_available_clients:
            reasons = "; ".join(f"node {n}: {r}" for n, r in list(self.rejected.items())[:3])
            raise NoClientsError(
                f"{len(self.nodes)} healthy clients, "
                f"min-available-clients={self.config.min_available_clients}. "
                f"Rejected: {reasons or 'none'}"
            )
        pids = [n.partition_id for n in self.nodes.values()]
        if len(set(pids)) != len(pids):
            raise NoClientsError(
                f"two nodes claim the same partition-id: {sorted(pids)}; give each its own"
            )

    def _handshake(self, grid: Grid, node_ids: list[int]) -> None:
        messages = [
            self._message(node_id, None, MessageType.QUERY, 0, None) for node_id in node_ids
        ]
        replies = grid.send_and_receive(messages, timeout=self.config.round_timeout)
        outcome = self._collect(0, "query", replies)
        for info, reply in outcome.ok:
            metrics = reply.content["metrics"]
            node = NodeInfo(
                info.node_id,
                int(metrics["partition-id"]),
                int(metrics["num-train"]),
                int(metrics["num-test"]),
            )
            self.nodes[node.node_id] = node
        for node_id, _pid, status, reason in outcome.failed:
            self.rejected[node_id] = f"{status}: {reason}"
            log.error("node %s left out of the run (%s): %s", node_id, status, reason)

    def _refresh_nodes(self, grid: Grid) -> None:
        """Handshake nodes that connected since the last round; forget nodes that left."""
        connected = set(grid.get_node_ids())
        new = sorted(connected - set(self.nodes) - set(self.rejected))
        if new:
            self._handshake(grid, new)
        for gone in set(self.nodes) - connected:
            log.warning(
                "node %s (partition %s) disconnected", gone, self.nodes.pop(gone).partition_id
            )

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
        tensors: dict[str, np.ndarray] | None,
    ) -> Message:
        content = RecordDict(
            {"config": ConfigRecord({"server-round": server_round, "algorithm": self.name})}
        )
        if tensors is not None:
            content["arrays"] = arrays_to_record(tensors)
        message = Message(
            content, dst_node_id=node_id, message_type=message_type, group_id=str(server_round)
        )
        dense = self.dense_model_bytes if tensors is not None else 0
        self._outbox.append(_Sent(message, node, node_id, dense))
        return message

    def _collect(self, server_round: int, kind: str, replies: Iterable[Message]) -> _Outcome:
        """Ledger rows for what was sent and what came back; sort replies into ok / failed."""
        sent, self._outbox = self._outbox, []
        by_id = {s.message.metadata.message_id: s for s in sent}
        outcome = _Outcome()
        for s in sent:  # message ids are set once Flower has pushed them
            pid = s.node.partition_id if s.node else -1
            self.ledger.record(
                round=server_round,
                node_id=s.node_id,
                partition_id=pid,
                direction="down",
                kind=kind,
                payload_bytes=payload_bytes(s.message.content.get("arrays")),
                message_bytes=message_bytes(s.message),
                dense_bytes=s.dense,
            )
        answered = set()
        for reply in replies:
            s = by_id.get(reply.metadata.reply_to_message_id)
            if s is None:
                log.warning("round %s: dropped a reply to an unknown message", server_round)
                continue
            answered.add(reply.metadata.reply_to_message_id)
            pid = s.node.partition_id if s.node else -1
            if reply.has_error():
                outcome.failed.append((s.node_id, pid, "error", _clean_reason(reply.error.reason)))
                continue
            arrays = reply.content.get("arrays")
            self.ledger.record(
                round=server_round,
                node_id=s.node_id,
                partition_id=pid,
                direction="up",
                kind=kind,
                payload_bytes=payload_bytes(arrays),
                message_bytes=message_bytes(reply),
                dense_bytes=self.dense_model_bytes if arrays is not None else 0,
            )
            if "metrics" not in reply.content:
                outcome.failed.append(
                    (s.node_id, pid, "malformed", "reply has no 'metrics' record")
                )
                continue
            node = s.node or NodeInfo(s.node_id, -1, 0, 0)
            outcome.ok.append((node, reply))
        for message_id, s in by_id.items():
            if message_id not in answered:
                pid = s.node.partition_id if s.node else -1
                outcome.failed.append(
                    (
                        s.node_id,
                        pid,
                        "timeout",
                        f"no reply within round-timeout={self.config.round_timeout:.0f} s",
                    )
                )
        return outcome

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
            self.client_rows.append(
                {
                    "round": server_round,
                    "phase": phase,
                    "node_id": node_id,
                    "partition_id": pid,
                    "status": status,
                    "reason": reason,
                }
            )

    # ------------------------------------------------------------------ Flower Strategy API
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._round_started = time.perf_counter()
        self._refresh_nodes(grid)
        self._global = record_to_arrays(arrays)
        nodes = self.sample(self.config.fraction_train, self.config.min_train_clients)
        return [
            self._message(
                n.node_id,
                n,
                MessageType.TRAIN,
                server_round,
                self.train_payload(server_round, n, self._global),
            )
            for n in nodes
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        outcome = self._collect(server_round, "train", replies)
        updates: list[ClientUpdate] = []
        for node, reply in outcome.ok:
            try:
                tensors = record_to_arrays(reply.content["arrays"], expected=self.template)
            except (PayloadError, KeyError) as exc:
                outcome.failed.append(
                    (node.node_id, node.partition_id, "malformed", f"bad train payload: {exc}")
                )
                continue
            update = ClientUpdate(node, tensors, dict(reply.content["metrics"]))
            updates.append(update)
            self.client_rows.append(
                {
                    "round": server_round,
                    "phase": "train",
                    "node_id": node.node_id,
                    "partition_id": node.partition_id,
                    "status": "ok",
                    "reason": "",
                    "num_examples": update.num_examples,
                    "train_loss": update.metrics.get("train-loss"),
                    "train_seconds": update.metrics.get("train-seconds"),
                    "density": update.metrics.get("density"),
                }
            )
        self._record_failures(server_round, "train", outcome)
        if not updates:
            log.warning(
                "round %s: no training update arrived; the global model is unchanged", server_round
            )
            return None, None
        self._global = self.aggregate(server_round, updates, self._global)
        weights = [u.num_examples for u in updates]
        loss = (
            float(
                np.average(
                    [u.metrics.get("train-loss", math.nan) for u in updates], weights=weights
                )
            )
            if sum(weights)
            else math.nan
        )
        return arrays_to_record(self._global), MetricRecord(
            {"train-loss": loss, "clients": len(updates)}
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        global_arrays = record_to_arrays(arrays)
        nodes = (
            self.sample(self.config.fraction_evaluate, self.config.min_evaluate_clients)
            if self.config.fraction_evaluate > 0
            else []
        )
        return [
            self._message(
                n.node_id,
                n,
                MessageType.EVALUATE,
                server_round,
                self.evaluate_payload(server_round, n, global_arrays),
            )
            for n in nodes
        ]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        outcome = self._collect(server_round, "evaluate", replies)
        rows = []
        for node, reply in outcome.ok:
            m = dict(reply.content["metrics"])
            rows.append(
                {
                    "round": server_round,
                    "phase": "evaluate",
                    "node_id": node.node_id,
                    "partition_id": node.partition_id,
                    "status": "ok",
                    "reason": "",
                    "num_examples": int(m.get("num-examples", 0)),
                    "global_loss": m.get("global-loss"),
                    "global_accuracy": m.get("global-accuracy"),
                    "personal_loss": m.get("personal-loss"),
                    "personal_accuracy": m.get("personal-accuracy"),
                    "density": m.get("density"),
                }
            )
        self.client_rows.extend(rows)
        self._record_failures(server_round, "evaluate", outcome)
        summary = self._round_summary(server_round, rows, len(outcome.failed))
        self.round_rows.append(summary)
        self.write_results()
        self._log_progress(summary)
        headline = ("global_accuracy", "global_loss", "personal_accuracy", "personal_loss")
        return MetricRecord(
            {k.replace("_", "-"): summary[k] for k in headline if not math.isnan(summary[k])}
        )

    def summary(self) -> None:
        log.info("fedticket %s: %s", self.name, {k: v for k, v in self.config.to_dict().items()})

    # ------------------------------------------------------------------ results
    def _round_summary(self, server_round: int, eval_rows: list[dict], eval_failures: int) -> dict:
        train_rows = [
            r for r in self.client_rows if r["round"] == server_round and r["phase"] == "train"
        ]
        ok_train = [r for r in train_rows if r["status"] == "ok"]
        evaluated = [r for r in eval_rows if r["num_examples"] > 0]
        n_eval = np.array([r["num_examples"] for r in evaluated], dtype=float)

        def pooled(key: str) -> float:
            return (
                float(np.average([r[key] for r in evaluated], weights=n_eval))
                if evaluated
                else math.nan
            )

        def client_mean(key: str) -> float:
            return float(np.mean([r[key] for r in evaluated])) if evaluated else math.nan

        down = self.ledger.totals(round=server_round, direction="down")
        up = self.ledger.totals(round=server_round, direction="up")
        weights = [r["num_examples"] for r in ok_train]
        return {
            "round": server_round,
            "train_clients": len(ok_train),
            "train_failures": len(train_rows) - len(ok_train),
            "eval_clients": len(eval_rows),
            "eval_failures": eval_failures,
            "train_loss": float(np.average([r["train_loss"] for r in ok_train], weights=weights))
            if sum(weights)
            else math.nan,
            # accuracies are means over clients (the papers' convention); *_pooled weight
            # every local test example equally
            "global_accuracy": client_mean("global_accuracy"),
            "global_loss": client_mean("global_loss"),
            "personal_accuracy": client_mean("personal_accuracy"),
            "personal_loss": client_mean("personal_loss"),
            "global_accuracy_pooled": pooled("global_accuracy"),
            "personal_accuracy_pooled": pooled("personal_accuracy"),
            "message_bytes_down": down["message_bytes"],
            "message_bytes_up": up["message_bytes"],
            "payload_bytes_down": down["payload_bytes"],
            "payload_bytes_up": up["payload_bytes"],
            "dense_bytes_down": down["dense_bytes"],
            "dense_bytes_up": up["dense_bytes"],
            "seconds": time.perf_counter() - self._round_started,
        }

    def _log_progress(self, s: dict) -> None:
        log.info(
            "round %d/%d  global acc %.4f loss %.4f | personal acc %.4f | down %s up %s | %.1f s",
            s["round"],
            self.config.num_rounds,
            s["global_accuracy"],
            s["global_loss"],
            s["personal_accuracy"],
            _human_bytes(s["message_bytes_down"]),
            _human_bytes(s["message_bytes_up"]),
            s["seconds"],
        )

    def write_results(self) -> None:
        """Rewrite every table atomically (a killed run keeps each finished round)."""
        self.run_dir.write_table("rounds", pd.DataFrame(self.round_rows))
        clients = pd.DataFrame(self.client_rows, columns=CLIENT_COLUMNS)
        clients = clients.astype(
            {
                "round": "int64",
                "node_id": "uint64",
                "partition_id": "int64",
                "phase": "string",
                "status": "string",
                "reason": "string",
            }
        )
        clients = clients.astype(
            {
                c: "float64"
                for c in CLIENT_COLUMNS
                if c not in {"round", "phase", "node_id", "partition_id", "status", "reason"}
            }
        )
        self.run_dir.write_table("clients", clients)
        self.run_dir.write_table("comm", self.ledger.to_frame())
