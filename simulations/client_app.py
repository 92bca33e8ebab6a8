"""Flower ClientApp: every handler dispatches to ``clients/`` by the run's algorithm."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedticket.clients import handle_message

app = ClientApp()


@app.query()
def query(message: Message, context: Context) -> Message:
    """Handshake: report this node's partition and local data sizes."""
    return handle_message("query", message, context)


@app.train()
def train(message: Message, context: Context) -> Message:
    return handle_message("train", message, context)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    return handle_message("evaluate", message, context)
