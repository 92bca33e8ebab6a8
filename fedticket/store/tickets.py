"""A ticket (initial weights and mask) kept as a file, so another run can start from it.

``ticket.npz`` in a run directory holds ``weights/<tensor>`` and ``mask/<tensor>`` and a JSON
record of what made it (source, density, model, dataset, seed). Reading one is a trust boundary
(a file from another run, another machine, or anyone): before any array is loaded the archive's
declared sizes are bounded by the model's own, and then every tensor is checked against the
model (names, shapes, finite values, 0/1 masks, zeros outside the mask), so a bad file is one
clear ``TicketError`` and never a crash, a huge allocation or a NaN model.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedticket.learn.dae_ticket import Ticket
from fedticket.store.checkpoints import (
    CheckpointError,
    is_mask,
    read_archive,
    split_prefix,
    write_archive,
)


class TicketError(ValueError):
    """A ticket file that cannot be used; the message says why."""


def save_ticket(path: Path, ticket: Ticket, record: Mapping[str, Any]) -> None:
    """Write ``ticket`` and ``record`` (what made it) to ``path`` atomically."""
    arrays = {f"weights/{k}": v for k, v in ticket.weights.items()}
    arrays |= {f"mask/{k}": np.asarray(v, bool) for k, v in ticket.mask.items()}
    meta = dict(record) | {"source": ticket.source, "losses": ticket.losses}
    write_archive(path, arrays, meta)


def load_ticket(
    path: Path, template: Mapping[str, np.ndarray], prunable: list[str], model: str
) -> tuple[Ticket, dict[str, Any]]:
    """The ticket in ``path`` for a model of ``template`` (checked: module docstring), and its
    record."""
    limit = 4 * sum(a.nbytes for a in template.values()) + (1 << 20)
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise TicketError(f"ticket {path} cannot be read ({exc})") from None
    if declared > limit:
        raise TicketError(
            f"ticket {path} declares {declared} bytes, more than a ticket of this model "
            f"({limit} at most)"
        )
    try:
        arrays, meta = read_archive(path)
    except CheckpointError as exc:
        raise TicketError(f"ticket {exc}") from None
    if meta.get("model") != model:
        raise TicketError(f"ticket {path} is for model {meta.get('model')!r}, not {model!r}")
    weights, mask = split_prefix(arrays, "weights"), split_prefix(arrays, "mask")
    if set(weights) != set(template):
        missing, extra = sorted(set(template) - set(weights)), sorted(set(weights) - set(template))
        raise TicketError(f"ticket {path}: weights lack {missing} or hold unknown {extra}")
    if set(mask) != set(prunable):
        raise TicketError(f"ticket {path}: masks are for {sorted(mask)}, not {sorted(prunable)}")
    for name, value in weights.items():
        expected = template[name]
        if value.shape != expected.shape or value.dtype != expected.dtype:
            raise TicketError(
                f"ticket {path}: '{name}' is {value.dtype}{list(value.shape)}, the model's "
                f"{expected.dtype}{list(expected.shape)}"
            )
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise TicketError(f"ticket {path}: '{name}' holds a value that is not finite")
    for name, value in mask.items():
        if value.shape != template[name].shape or not is_mask(value):
            raise TicketError(f"ticket {path}: mask '{name}' is not a 0/1 mask of its tensor")
        if weights[name][~value.astype(bool)].any():
            raise TicketError(f"ticket {path}: '{name}' has weights outside its mask")
    masks = {name: value.astype(bool) for name, value in mask.items()}
    source = str(meta.get("source", ""))
    losses = meta.get("losses", [])
    return Ticket(weights, masks, source, losses if isinstance(losses, list) else []), meta
