"""Client side: one module per algorithm on ``FederatedClient``, registered by name."""

# `import clients` works only from the source tree and would load a second copy of the app
if __name__ != "fedticket.clients":
    raise ImportError(f"import fedticket.clients, not {__name__}: one installed namespace")

from fedticket.clients import cell, fedavg, fedltn, fedltp, flash, itahara, lotteryfl  # noqa: F401  (registers the algorithms)
from fedticket.clients.base import CLIENTS, FederatedClient, Masks, register_client
from fedticket.clients.handlers import handle_message

__all__ = ["CLIENTS", "FederatedClient", "Masks", "handle_message", "register_client"]
