"""One registry type for every name a run config can choose: datasets, partitioners, models,
run-config sections, strategies and clients.

Entries register themselves where they are defined (a decorator next to the code), so adding
one edits no shared module. A registry may name *provider* modules whose import fills it; they
are imported on first lookup, so a reader such as the run config can list datasets or models
without importing the data or model code itself (no import circle, and nothing loads that a
lookup does not need).

The core's well-known registries live here (``DATASETS``, ``PARTITIONERS``, ``MODELS``,
``SECTIONS``); the algorithm registries live with their bases (``strategies.base``,
``clients.base``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
E = TypeVar("E")


class Registry(Mapping[str, T]):
    """Name -> entry of one kind; a read-only mapping once filled.

    Registering a name twice is refused: two entries of one name would make the run config
    pick whichever module was imported last."""

    def __init__(self, kind: str, providers: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._providers = providers
        self._entries: dict[str, T] = {}
        self._loaded = not providers

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; returns it."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names are non-empty strings, got {name!r}")
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str, wrap: Callable[[E], T] | None = None) -> Callable[[E], E]:
        """Decorator: register the decorated object (or ``wrap(obj)``) under ``name``."""

        def decorate(obj: E) -> E:
            self.add(name, wrap(obj) if wrap is not None else obj)  # type: ignore[arg-type]
            return obj

        return decorate

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # before importing: a provider may read the registry itself
            for module in self._providers:
                importlib.import_module(module)

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def names(self) -> list[str]:
        """Registered names, sorted (what error messages and ``--help`` list)."""
        return sorted(self)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"


DATASETS: Registry[Any] = Registry("dataset", ("fedticket.learn.data.datasets",))
PARTITIONERS: Registry[Any] = Registry("partitioner", ("fedticket.learn.data.partitions",))
MODELS: Registry[Any] = Registry("model", ("fedticket.learn.models",))
#: run-config sections beyond the shared keys: each algorithm's hyper-parameters, and tracking
SECTIONS: Registry[Any] = Registry(
    "run-config section", ("fedticket.algorithms", "fedticket.store.tracking")
)
