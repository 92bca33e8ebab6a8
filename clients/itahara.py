"""Itahara et al. client: FedAvg's local training under the server's fixed ticket mask.

Implementation based on Itahara et al., arXiv 2004.09817 (docs/algorithms/itahara.md): the
ticket is made on the server before round 1, so the client is FedAvg's (``clients.fedavg``),
which trains under the mask a message carries and replies with the kept entries only.
"""

from __future__ import annotations

from fedticket.clients.base import register_client
from fedticket.clients.fedavg import FedAvgClient


@register_client("itahara")
class ItaharaClient(FedAvgClient):
    """FedAvg's client; registered under the algorithm's name."""
