"""FLASH's hyper-parameters and the name of its stage-1 round (Babakniya et al., TMLR 2023,
arXiv 2208.13092; ../shared/algorithms/flash.md)."""

from __future__ import annotations

from dataclasses import dataclass

from fedticket.config.fields import setting
from fedticket.config.limits import MAX_EPOCHS, MAX_ROUNDS
from fedticket.config.sections import Section, register_section

#: the ``Instructions.stage`` of FLASH's stage-1 round: clients measure layer sensitivity by
#: sparse dynamic training and reply with kept counts only
SENSITIVITY_STAGE = "sensitivity"


@register_section("flash")
@dataclass(frozen=True)
class FlashSettings(Section):
    """Consensus density, mode, stage 1, mask evolution and aggregation of FLASH."""

    density: float = setting(
        0.05, "FLASH: target density of the consensus sub-model", low=0, high=1, low_open=True
    )
    flash_mode: str = setting(
        "jmwst",
        "FLASH: fixed mask, evolving consensus mask, or per-device budgets",
        choices=("spdst", "jmwst", "hetero"),
    )
    init_fraction: float = setting(
        0.1,
        "FLASH stage 1: share of clients that measure layer sensitivity",
        low=0,
        high=1,
        low_open=True,
    )
    init_epochs: int = setting(
        10, "FLASH stage 1: local epochs of sparse dynamic training", low=1, high=MAX_EPOCHS
    )
    dst_prune_rate: float = setting(
        0.25, "FLASH: initial prune-and-regrow share of sparse dynamic training", low=0, high=1
    )
    consensus_interval: int = setting(
        1, "FLASH JMWST: rounds between consensus-mask updates (r_int)", low=1, high=MAX_ROUNDS
    )
    budget_source: str = setting(
        "avg",
        "FLASH: layer budgets from the clients' average counts or the aggregate's non-zeros",
        choices=("avg", "aggregate"),
    )
    update_mode: str = setting(
        "mean",
        "FLASH: plain mean (pruned = 0) or mean over the clients that hold each weight",
        choices=("mean", "coverage"),
    )
