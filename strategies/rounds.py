"""The round loop, Flower's ``Strategy.start`` (configure, send, aggregate; train, then
evaluate) owned here, so that a run can start at a resumed round, retry a round that got fewer
than ``min-train-replies`` replies, and checkpoint after a round."""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid

from fedticket.config import RunConfig
from fedticket.strategies.exchange import Delivery, Exchange, Outbox
from fedticket.strategies.fused_evaluation import PendingRound
from fedticket.strategies.nodes import NoClientsError
from fedticket.wire.records import record_to_state, state_to_record

log = logging.getLogger("flwr")  # Flower's handlers print it in `flwr run --stream`


class RoundSteps(Protocol):
    """What the loop drives (a ``SparseStrategy``)."""

    config: RunConfig
    template: dict[str, np.ndarray]
    exchange: Exchange
    stopped: str  # why the run ended early ("": it did not)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Outbox: ...

    def aggregate_train(
        self, server_round: int, replies: Delivery
    ) -> tuple[ArrayRecord | None, MetricRecord | None]: ...

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Outbox: ...

    def aggregate_evaluate(self, server_round: int, replies: Delivery) -> MetricRecord | None: ...

    def write_results(self) -> None: ...

    def stop_reason(self, server_round: int) -> str: ...

    def save_checkpoint(self, server_round: int, global_arrays: dict[str, np.ndarray]) -> None: ...

    def defer_evaluation(self, server_round: int) -> None: ...

    def resume_deferred(self, server_round: int) -> None: ...

    pending: PendingRound | None  # a round whose client evaluation is deferred


def run_rounds(
    steps: RoundSteps,
    grid: Grid,
    arrays: dict[str, np.ndarray],
    first_round: int,
    num_rounds: int,
) -> dict[str, np.ndarray]:
    """Rounds ``first_round`` to ``num_rounds`` from the global model ``arrays``; returns the
    final one. Stops early, before a round, where ``stop_reason`` gives a reason (kept in
    ``stopped``). Raises ``NoClientsError`` when a round stays short of training replies."""
    config, record = steps.config, state_to_record(arrays)
    if first_round > 1 and fuses_evaluation(config, first_round - 1):
        steps.resume_deferred(first_round - 1)  # the checkpoint's round was not evaluated yet
    for server_round in range(first_round, num_rounds + 1):
        steps.stopped = steps.stop_reason(server_round)
        if steps.stopped:
            log.warning("fedticket: %s", steps.stopped)
            if steps.pending is not None:  # the deferred evaluation, by evaluate messages
                evaluate(steps, grid, steps.pending.server_round, record)
            if config.checkpoint_every and server_round > first_round:
                steps.save_checkpoint(server_round - 1, record_to_state(record, steps.template))
            break
        for attempt in range(config.round_retries + 1):
            outbox = steps.configure_train(server_round, record, ConfigRecord(), grid)
            new, metrics = steps.aggregate_train(server_round, steps.exchange.deliver(grid, outbox))
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
            steps.write_results()
            raise NoClientsError(
                f"round {server_round}: fewer than min-train-replies="
                f"{config.min_train_replies} clients replied in {config.round_retries + 1} "
                "tries; see clients.parquet for why; fix the clients, lower "
                "min-train-replies, or resume later (finished rounds are kept)"
            )
        if new is not None:
            record = new
        if fuses_evaluation(config, server_round):
            steps.defer_evaluation(server_round)  # the next round's train messages evaluate it
        else:
            evaluate(steps, grid, server_round, record)
        every = config.checkpoint_every
        if every and (server_round % every == 0 or server_round == num_rounds):
            steps.save_checkpoint(server_round, record_to_state(record, steps.template))
    return record_to_state(record, steps.template)


def evaluate(steps: RoundSteps, grid: Grid, server_round: int, record: ArrayRecord) -> None:
    """``server_round``'s evaluate messages and its row."""
    outbox = steps.configure_evaluate(server_round, record, ConfigRecord(), grid)
    steps.aggregate_evaluate(server_round, steps.exchange.deliver(grid, outbox))


def fuses_evaluation(config: RunConfig, server_round: int) -> bool:
    """``evaluate-with-train``: the round's client evaluation goes with the next round's train
    messages (``strategies.fused_evaluation``); never the last round's, which has no next."""
    return (
        config.evaluate_with_train
        and config.fraction_evaluate > 0
        and server_round < config.num_rounds
        and is_evaluation_round(config, server_round)
    )


def is_evaluation_round(config: RunConfig, server_round: int) -> bool:
    """Every ``evaluate-every`` rounds and after the last."""
    every, last = config.evaluate_every, config.num_rounds
    return server_round % every == 0 or server_round == last
