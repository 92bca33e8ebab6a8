"""Test tooling: an in-process Flower ``Grid`` that delivers each message to the real client
handlers (``clients.handlers.handle_message``) with one ``Context`` per node, so strategies run
their real ``start`` loop without Ray. Faults can be injected per (round, partition)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict

from fedticket.clients.handlers import handle_message

Fault = Callable[[Message, Message], Message | None]  # (request, reply) -> new reply or None (lost)


class LoopbackGrid:
    def __init__(
        self, num_nodes: int, run_config: dict, node_configs: dict[int, dict] | None = None
    ) -> None:
        self.contexts: dict[int, Context] = {}
        for pid in range(num_nodes):
            node_id = 1000 + pid
            node_config = {"partition-id": pid, "num-partitions": num_nodes} | (
                node_configs or {}
            ).get(pid, {})
            self.contexts[node_id] = Context(
                run_id=1,
                node_id=node_id,
                node_config=node_config,
                state=RecordDict(),
                run_config=run_config,
            )
        # (server round, partition id, message type) -> fault applied to the reply
        self.faults: dict[tuple[int, int, str], Fault] = {}
        # (server round, partition id, message type) -> called with the node's Context first
        self.before: dict[tuple[int, int, str], Callable[[Context], None]] = {}
        self.delivered: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = message.object_id  # what pushing does
            self.delivered.append(message)
            context = self.contexts[message.metadata.dst_node_id]
            server_round = int(message.content["config"]["server-round"])
            pid = context.node_config["partition-id"]
            hook = self.before.get((server_round, pid, message.metadata.message_type))
            if hook is not None:
                hook(context)
            try:
                reply = handle_message(message.metadata.message_type, message, context)
            except Exception as exc:
                reply = Message(
                    Error(code=2, reason=f"{type(exc).__name__}: {exc}"), reply_to=message
                )
            fault = self.faults.get((server_round, pid, message.metadata.message_type))
            if fault is not None:
                reply = fault(message, reply)
            if reply is not None:
                replies.append(reply)
        return replies


def three_client_config(root, **overrides) -> dict:
    """A 2-round LotteryFL run config for 3 loopback clients (IID, always pruning) that writes
    under ``root``; ``overrides`` change or add keys."""
    return {
        "algorithm": "lotteryfl",
        "num-rounds": 2,
        "partitioner": "iid",
        "acc-threshold": -1.0,
        "min-train-clients": 3,
        "min-evaluate-clients": 3,
        "min-available-clients": 3,
        "output-root": str(root),
    } | overrides
