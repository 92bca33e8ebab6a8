"""The evaluate half of a round: Flower's ``configure_evaluate`` / ``aggregate_evaluate``, the
four evaluation protocols' server side, and the round's ``rounds.parquet`` row.

``SparseStrategy`` (``strategies.base``) takes these steps from ``EvaluationSteps``. A round is
closed (its row written) once its client evaluation is in: right after its evaluate messages,
or, under ``evaluate-with-train``, once the next round's train replies bring it
(``strategies.fused_evaluation``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from fedticket.config import RunConfig
from fedticket.learn.eval_protocols import PROTOCOLS, running_best
from fedticket.learn.global_evaluator import GlobalEvaluator
from fedticket.learn.train import EvalStats
from fedticket.store.tracking import Tracker
from fedticket.strategies import rounds
from fedticket.strategies.exchange import Exchange, Outbox, Outcome
from fedticket.strategies.fused_evaluation import PendingRound, RoundClose, evaluation_failures
from fedticket.strategies.nodes import NodeInfo, reply_row
from fedticket.strategies.reporting import RunTables, log_progress, round_summary
from fedticket.wire.records import record_to_state


class EvaluationSteps:
    """The evaluate steps of ``SparseStrategy``: the attributes below, and the hooks these
    steps call (``sample``, ``_send``, ``evaluate_tensors``, ``on_evaluate_reply``,
    ``round_extras``, ``write_results``), are its own."""

    config: RunConfig
    template: dict[str, np.ndarray]
    exchange: Exchange
    tables: RunTables
    held: dict[int, str]
    client_rows: list[dict]
    round_rows: list[dict]
    reference_best: dict[int, float]
    global_evaluator: GlobalEvaluator | None
    pending: PendingRound | None
    tracker: Tracker
    _global: dict[str, np.ndarray]
    _round_started: float
    _run_started: float

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Outbox:
        run = self.config
        if run.fraction_evaluate <= 0 or not rounds.is_evaluation_round(run, server_round):
            return self.exchange.outbox(server_round, MessageType.EVALUATE, [])
        evaluated = record_to_state(arrays, self.template)
        sends = [
            self._send(server_round, n, self.evaluate_tensors(server_round, n, evaluated))
            for n in self.sample(run.fraction_evaluate, run.min_evaluate_clients)
        ]
        return self.exchange.outbox(server_round, MessageType.EVALUATE, sends)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        outcome = self.exchange.collect(replies)
        for sent, reply in outcome.ok:
            assert sent.node is not None
            self.held[sent.node.partition_id] = sent.digest
            self._record_evaluation(server_round, sent.node, reply.metrics)
        self.exchange.record_failures(server_round, "evaluate", outcome)
        pending, self.pending = self.pending, None
        if pending is not None and pending.server_round == server_round:  # a stopped run's
            return self._close_round(server_round, pending.close)
        return self._close_round(server_round, self._round_close(server_round))

    def defer_evaluation(self, server_round: int) -> None:
        """``evaluate-with-train``: close ``server_round`` once the next round's train
        replies bring its client evaluation (``strategies.fused_evaluation``)."""
        self.pending = PendingRound(server_round, self._round_close(server_round))

    def resume_deferred(self, server_round: int) -> None:
        """After a restart from ``server_round``'s checkpoint, whose evaluation was deferred:
        its global score again (the model is the checkpoint's), its timings unknown."""
        close = RoundClose.resumed(self.evaluate_global(), self.round_extras(server_round))
        self.pending = PendingRound(server_round, close)

    def _close_pending(self, outcome: Outcome) -> None:
        """The pending round's evaluation from these fused train replies; its row."""
        assert self.pending is not None
        pending, self.pending = self.pending, None
        for sent, reply in outcome.ok:
            if sent.node is not None and reply.evaluation is not None:
                self._record_evaluation(pending.server_round, sent.node, reply.evaluation)
        self.exchange.record_failures(
            pending.server_round, "evaluate", evaluation_failures(outcome)
        )
        self._close_round(pending.server_round, pending.close)

    def _record_evaluation(self, server_round: int, node: NodeInfo, metrics: Mapping) -> None:
        m = dict(metrics)
        m["reference-accuracy"] = self.keep_reference_best(node.partition_id, m)
        self.on_evaluate_reply(server_round, node, m)
        self.tables.add(reply_row(server_round, "evaluate", node, m))

    def _round_close(self, server_round: int) -> RoundClose:
        """The global protocol's score and the round's timings, now."""
        started_global = time.perf_counter()
        evaluated = rounds.is_evaluation_round(self.config, server_round)
        global_stats = self.evaluate_global() if evaluated else EvalStats(math.nan, math.nan, 0)
        now = time.perf_counter()
        return RoundClose(
            global_stats,
            seconds=now - self._round_started,
            seconds_clients=self.exchange.waiting,
            seconds_global=now - started_global,
            finished_s=now - self._run_started,
            extras=self.round_extras(server_round),
        )

    def _close_round(self, server_round: int, close: RoundClose) -> MetricRecord:
        """``server_round``'s row (its client rows must all be in), tables written."""
        summary = (
            round_summary(server_round, self.client_rows, self.ledger, close.seconds)
            | {"global_accuracy": close.global_stats.accuracy}
            | {"global_loss": close.global_stats.loss}
            | {"seconds_clients": close.seconds_clients, "seconds_global": close.seconds_global}
            | {"finished_s": close.finished_s}
            | close.extras
        )
        self.round_rows.append(summary)
        self.write_results()
        self.tracker.log_round(summary)
        log_progress(summary, self.config.num_rounds)
        headline = [f"{p}_accuracy" for p in PROTOCOLS]
        return MetricRecord(
            {k.replace("_", "-"): summary[k] for k in headline if not math.isnan(summary[k])}
        )

    def keep_reference_best(self, partition_id: int, metrics: Mapping[str, float]) -> float:
        """The ``reference`` protocol's best-ever for a client, kept (and checkpointed) here too:
        a client that lost its state restarts its own running maximum; this copy carries on."""
        reported = float(metrics.get("reference-accuracy", math.nan))
        best = running_best(self.reference_best.get(partition_id, math.nan), reported)
        self.reference_best[partition_id] = best
        return best

    def global_model(self) -> dict[str, np.ndarray]:
        """The model the ``global`` protocol scores (LotteryFL's code: unmasked theta_g, E4)."""
        return self._global

    def evaluate_global(self) -> EvalStats:
        """The ``global`` protocol: the model on the global test set (NaN: no data or model)."""
        if self.global_evaluator is None or not self._global:
            return EvalStats(math.nan, math.nan, 0)
        return self.global_evaluator.evaluate(self.global_model())
