"""Replies under a mask the server decides (Fed-LTP's sub-models, Itahara's ticket): each is cut
to its client's mask before aggregation, so a dense or wider upload, a bug or a hostile client,
cannot move the global model off its sparse support."""

from __future__ import annotations

from collections.abc import Callable

from fedticket.sparse.masks import Masks, apply_masks
from strategies.base import ClientUpdate, NodeInfo


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
