"""LotteryFL's hyper-parameters (Li et al., arXiv 2008.03371; ../shared/algorithms/lotteryfl.md).

FedLTN prunes by the same gate and schedule keys, so it reads this section too.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedticket.config.fields import setting
from fedticket.config.sections import Section, register_section


@register_section("lotteryfl")
@dataclass(frozen=True)
class LotteryFLSettings(Section):
    """The prune gate, the pruning schedule and the rewind of LotteryFL's clients."""

    acc_threshold: float = setting(
        0.5,
        "LotteryFL: prune only when the received model's accuracy is above this (<0: always)",
        low=-1,
        high=1,
    )
    prune_rate: float = setting(
        0.2, "LotteryFL: share of remaining weights pruned per step", low=0, high=1, low_open=True
    )
    target_density: float = setting(
        0.1, "LotteryFL: prune while the kept rate is above this", low=0, high=1
    )
    gate_data: str = setting(
        "val", "LotteryFL: data the prune gate evaluates on", choices=("val", "test")
    )
    rewind: str = setting(
        "global",
        "LotteryFL: after pruning, restart from the received global model (reference code) or "
        "theta_0 (paper text)",
        choices=("init", "global"),
    )
