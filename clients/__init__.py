"""Client side: one module per algorithm on ``FederatedClient``, registered by name."""

from clients import cell, fedavg, fedltn, fedltp, flash, itahara, lotteryfl  # noqa: F401  (registers the algorithms)
from clients.base import CLIENTS, FederatedClient, Masks, register_client
from clients.handlers import handle_message

__all__ = ["CLIENTS", "FederatedClient", "Masks", "handle_message", "register_client"]
