"""A round's sends and replies over whichever grid runs the app, pulled promptly when deployed.

Flower 1.39's deployed grid (``HttpGrid.send_and_receive``) sleeps a fixed 3 s between pulls for
replies, with no setting: 1.5 s of every round on average. This pulls through the grid's public
push and pull calls instead; every other grid keeps its own loop.
"""

from __future__ import annotations

import time

from flwr.app import Message
from flwr.serverapp import Grid

DEPLOYED_PULL_INTERVAL = 0.1  # s between a deployed ServerApp's pulls for replies


def _deployed_grid_type() -> type | None:
    """Flower 1.39's grid of a deployed ServerApp (an internal module: None if it moves)."""
    try:
        from flwr.superlink.grid.http_grid import HttpGrid
    except ImportError:
        return None
    return HttpGrid


def send_and_receive(grid: Grid, messages: list[Message], timeout: float) -> list[Message]:
    """``grid.send_and_receive``, but a deployed grid is pulled every
    DEPLOYED_PULL_INTERVAL instead of Flower 1.39's fixed 3 s (``HttpGrid.send_and_receive``
    sleeps 3 s between pulls, with no setting), which costs a round 1.5 s on average, through
    the grid's public push and pull calls with the same timeout. The simulation's grid has its
    own setting (``tune_polling``) and every other grid keeps its own loop."""
    deployed = _deployed_grid_type()
    if deployed is None or not isinstance(grid, deployed):
        return list(grid.send_and_receive(messages, timeout=timeout))
    waiting = set(grid.push_messages(messages))
    deadline = time.time() + timeout
    replies: list[Message] = []
    while waiting:
        pulled = list(grid.pull_messages(waiting))
        replies.extend(pulled)
        waiting.difference_update(reply.metadata.reply_to_message_id for reply in pulled)
        if not waiting or time.time() >= deadline:
            break
        time.sleep(DEPLOYED_PULL_INTERVAL)
    return replies
