"""Client side: one module per algorithm on ``FederatedClient``, registered by name."""

from clients import fedavg, fedltn, flash, lotteryfl  # noqa: F401  (registers the algorithms)
from clients.base import CLIENTS, FederatedClient, Masks, handle_message, register_client

__all__ = ["CLIENTS", "FederatedClient", "Masks", "handle_message", "register_client"]
