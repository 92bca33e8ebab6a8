"""Experiment tracking: each round's ``rounds.parquet`` row, logged where researchers look.

Run-config key ``tracking``: ``"none"`` (the default) or ``"tensorboard"``, TensorBoard event
files in ``<run dir>/tensorboard/`` (offline and local; ``tensorboard --logdir
~/fedticket-runs`` shows every run under its algorithm and config hash). A tracker gets the
same numbers as the table, one scalar per finite column, step = round, grouped by what they
measure (``accuracy/served_accuracy``, ``bytes/message_bytes_up``, ``time/seconds``, ...).
The table stays the record: a tracker is a view of it and never changes what a run computes,
so the key is left out of the config hash.

A new backend is a class with ``log_round`` and ``close`` in ``TRACKERS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fedticket.config.fields import ConfigError, setting
from fedticket.config.sections import Section, register_section

#: where a run's TensorBoard event files go, inside its run directory
TENSORBOARD_DIR = "tensorboard"


@register_section("tracking")
@dataclass(frozen=True)
class TrackingSettings(Section):
    """The tracking key (a section of its own: it belongs to no algorithm)."""

    tracking: str = setting(
        "none",
        "log each round's row to an experiment tracker too: none, or tensorboard (event files "
        "in the run directory)",
        choices=("none", "tensorboard"),
    )


class Tracker(Protocol):
    """Receives each round's row once the row is final; ``close`` at the run's end."""

    def log_round(self, row: Mapping[str, object]) -> None: ...

    def close(self) -> None: ...


class NoTracking:
    def log_round(self, row: Mapping[str, object]) -> None:
        pass

    def close(self) -> None:
        pass


def scalar_tag(column: str) -> str:
    """A column's TensorBoard tag: its group, then its name."""
    if "accuracy" in column or column.endswith("_loss"):
        group = "accuracy" if "accuracy" in column else "loss"
    elif column.endswith("_bytes") or "_bytes_" in column:
        group = "bytes"
    elif column.startswith("seconds") or column.endswith("_s"):
        group = "time"
    else:
        group = "round"
    return f"{group}/{column}"


class TensorBoardTracker:
    """Event files through torch's ``SummaryWriter`` (needs the ``tensorboard`` package)."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer imports the tensorboard package
            raise ConfigError(
                "run-config key 'tracking': 'tensorboard' needs the tensorboard package "
                '(fix: pip install -e ".[tracking]", or --run-config \'tracking="none"\')'
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_round(self, row: Mapping[str, object]) -> None:
        step = int(row["round"])  # type: ignore[call-overload]
        for column, value in row.items():
            if column == "round" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(scalar_tag(column), float(value), step)
        self.writer.flush()  # a killed run keeps every finished round, as its tables do

    def close(self) -> None:
        self.writer.close()


TRACKERS: dict[str, Callable[[Path], Tracker]] = {
    "none": lambda run_dir: NoTracking(),
    "tensorboard": lambda run_dir: TensorBoardTracker(run_dir / TENSORBOARD_DIR),
}


def tracker_for(settings: TrackingSettings, run_dir: Path) -> Tracker:
    """The run's tracker (``ConfigError`` when its package is missing)."""
    return TRACKERS[settings.tracking](run_dir)
