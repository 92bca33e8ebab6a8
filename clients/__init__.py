"""Client side: one module per algorithm on ``FederatedClient``, registered by name."""

from fedticket.clients import cell, fedavg, fedltn, fedltp, flash, itahara, lotteryfl  # noqa: F401  (registers the algorithms)
from fedticket.clients.base import CLIENTS, FederatedClient, Masks, register_client
from fedticket.clients.handlers import handle_message

__all__ = ["CLIENTS", "FederatedClient", "Masks", "handle_message", "register_client"]
