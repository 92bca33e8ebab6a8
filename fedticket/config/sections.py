"""Run-config sections: an algorithm's hyper-parameters, declared next to its code.

A section is a frozen dataclass of ``setting`` fields, registered in
``fedticket.registry.SECTIONS`` by the module that defines it (``fedticket/algorithms/``).
``RunConfig`` composes every registered section: the keys users type stay flat
(``prune-rate``, not ``lotteryfl.prune-rate``), every key is accepted whatever the algorithm
(``pyproject.toml`` lists them all), and each key belongs to exactly one section, so a new
algorithm adds a file and never edits the shared config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Self, TypeVar

from fedticket.registry import SECTIONS

if TYPE_CHECKING:
    from fedticket.config.run_config import RunConfig


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of a run-config section; subclasses are frozen dataclasses of ``setting`` fields."""

    #: the algorithm (or family) whose keys these are: the registry name
    name: ClassVar[str] = ""
    #: the share of each class held out as the server's public data when ``public-fraction``
    #: is -1 (auto) and this is the run's algorithm (Fed-LTP's ticket search needs some)
    public_share: ClassVar[float] = 0.0

    @classmethod
    def of(cls, config: RunConfig) -> Self:
        """This section of ``config`` (each algorithm reads its hyper-parameters this way)."""
        return config.section(cls)

    def check(self, config: RunConfig) -> None:
        """Checks across keys (this section's and the shared ones); raise ``ConfigError``."""


S = TypeVar("S", bound=type[Section])


def register_section(name: str) -> Callable[[S], S]:
    """Class decorator: register a section under its algorithm's name."""

    def wrap(cls: S) -> S:
        if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
            raise TypeError(f"section {cls.__name__} must be a frozen dataclass")
        cls.name = name
        SECTIONS.add(name, cls)
        return cls

    return wrap


def section_classes() -> list[type[Section]]:
    """Every registered section, in registration order (the order of ``describe_keys``)."""
    return [SECTIONS[name] for name in SECTIONS]
