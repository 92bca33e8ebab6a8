"""The algorithms by name: the run config's ``algorithm`` picks one, each module registers its
own (adding an algorithm never edits another)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fedticket.registry import Registry

if TYPE_CHECKING:  # the base registers nothing itself; its subclasses import this module
    from fedticket.strategies.base import SparseStrategy

#: algorithm name -> strategy class; importing ``strategies`` registers every algorithm
STRATEGIES: Registry[type[SparseStrategy]] = Registry(
    "strategy algorithm", ("fedticket.strategies",)
)


def register_strategy(name: str) -> Callable[[type[SparseStrategy]], type[SparseStrategy]]:
    def wrap(cls: type[SparseStrategy]) -> type[SparseStrategy]:
        cls.name = name
        STRATEGIES.add(name, cls)
        return cls

    return wrap
