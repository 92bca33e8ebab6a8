"""Replies under a mask the server decides (Fed-LTP's sub-models, Itahara's ticket): each is cut
to its client's mask before aggregation, so a dense or wider upload, a bug or a hostile client,
cannot move the global model off its sparse support. ``ServerMaskedFedAvg`` is FedAvg so
guarded; an algorithm on it says only which mask each client has (``server_mask``)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import numpy as np

from fedticket.sparse.masks import Masks, apply_masks
from fedticket.strategies.base import ClientUpdate, NodeInfo
from fedticket.strategies.fedavg import FedAvg


def cut_to(
    updates: list[ClientUpdate], mask_of: Callable[[NodeInfo], Masks]
) -> tuple[list[ClientUpdate], int]:
    """The updates, each outside ``mask_of(node)`` zeroed and its mask set to it, and how many
    held weights outside it."""
    cut, widened = [], 0
    for update in updates:
        own = mask_of(update.node)
        sent = update.masks or {}
        if any(name not in sent or (sent[name] & ~own[name]).any() for name in own):
            widened += 1
            update = ClientUpdate(update.node, apply_masks(update.arrays, own), own, update.metrics)
        cut.append(update)
    return cut, widened


class ServerMaskedFedAvg(FedAvg):
    """FedAvg's keeper mean of replies cut to their clients' server-decided masks; the round's
    count of cut replies is the rounds table's ``projected_replies``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._projected = 0  # this round's replies cut to their mask

    @abstractmethod
    def server_mask(self, node: NodeInfo) -> Masks:
        """The mask the server decided for ``node``'s training."""

    def on_client_masks(self, node: NodeInfo, masks: Masks | None) -> None:
        """Masks are the server's: a reply under another mask is cut, never adopted."""

    def aggregate(
        self, server_round: int, updates: list[ClientUpdate], global_arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        cut, self._projected = cut_to(updates, self.server_mask)
        return super().aggregate(server_round, cut, global_arrays)

    def round_extras(self, server_round: int) -> dict[str, float]:
        projected, self._projected = self._projected, 0
        return super().round_extras(server_round) | {"projected_replies": float(projected)}
