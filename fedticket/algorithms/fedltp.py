"""Fed-LTP's hyper-parameters and server-side schedule maths (Shi et al., "Efficient federated
learning with enhanced privacy via lottery ticket pruning in edge computing", arXiv 2305.01387;
docs/algorithms/fedltp.md).

The ticket keeps ``1 - fedltp-pruned`` of each layer; the iterative scheme's i-th nested
sub-model keeps ``(1 - fedltp-further)^i`` of that (Eqs. 15-16: with Pr = 0.6, P2 = 0.1 and
three sub-models, 0.36, 0.324, 0.2916). Each is a per-layer top-k by the same magnitudes, so
every sub-model is inside the one before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fedticket.config.fields import ConfigError, setting
from fedticket.config.limits import MAX_EPOCHS, MAX_LR
from fedticket.config.sections import Section, register_section
from fedticket.sparse.consensus import kept_budgets as kept_budgets  # re-exported

if TYPE_CHECKING:
    from fedticket.config import RunConfig

MAX_STEPS = 1_000_000  # noisy local steps per round: far above the paper's 300
MAX_CANDIDATES = 100  # candidate tickets the server trains before round 1


@register_section("fedltp")
@dataclass(frozen=True)
class FedLTPSettings(Section):
    """Fed-LTP's ticket search, pruning schemes, DP-SGD, validation and privacy budget."""

    public_share: ClassVar[float] = 0.1  # public-fraction = -1: 10 % of each class

    fedltp_scheme: str = setting(
        "iterative",
        "Fed-LTP: every client trains the ticket (one-shot) or one of nested sub-models",
        choices=("iterative", "one-shot"),
    )
    fedltp_pruned: float = setting(
        0.6, "Fed-LTP: share of each layer the ticket prunes (Pr)", low=0, high=0.999
    )
    fedltp_further: float = setting(
        0.1,
        "Fed-LTP iterative: share each nested sub-model prunes of the one before (P2)",
        low=0,
        high=0.999,
    )
    fedltp_submodels: int = setting(
        5, "Fed-LTP iterative: nested sub-models (the paper: clients per round)", low=1, high=1000
    )
    fedltp_tickets: int = setting(
        3, "Fed-LTP: candidate tickets trained on the public data (M)", low=1, high=MAX_CANDIDATES
    )
    fedltp_ticket_epochs: int = setting(
        5, "Fed-LTP: epochs each candidate trains on the public data", low=1, high=MAX_EPOCHS
    )
    fedltp_ticket_lr: float = setting(
        0.05, "Fed-LTP: SGD step size of the ticket search", low=0, high=MAX_LR, low_open=True
    )
    fedltp_local_steps: int = setting(
        300, "Fed-LTP: noisy local steps per round (tau)", low=1, high=MAX_STEPS
    )
    fedltp_clip: float = setting(
        1.0,
        "Fed-LTP: per-example gradient clipping norm (C; the paper's 10 clips whole batches)",
        low=0,
        high=1e6,
        low_open=True,
    )
    fedltp_noise: float = setting(
        1.4,
        "Fed-LTP: Gaussian noise std over the clipping norm (sigma)",
        low=0,
        high=1e6,
        low_open=True,
    )
    fedltp_lr_decay: float = setting(
        0.99, "Fed-LTP: factor the local step size is multiplied by each round", low=0, high=1
    )
    fedltp_validation_scale: float = setting(
        1.0,
        "Fed-LTP: Laplace scale of each validation count (lambda_val; 0 = no validation)",
        low=0,
        high=1e6,
    )
    fedltp_epsilon: float = setting(
        10.0,
        "Fed-LTP: privacy budget; the run stops before a round would exceed it (0 = no stop)",
        low=0,
        high=1e6,
    )
    fedltp_delta: float = setting(
        1e-3, "Fed-LTP: the delta every epsilon is stated at", low=0, high=1, low_open=True
    )
    fedltp_noise_source: str = setting(
        "os",
        "Fed-LTP: DP noise from the OS (private) or from the run seed (repeatable, not private)",
        choices=("os", "seeded"),
    )

    def check(self, config: RunConfig) -> None:
        if config.algorithm != "fedltp":
            return
        if config.public_share <= 0:
            raise ConfigError(
                "run-config key 'public-fraction': Fed-LTP's server trains its ticket on public "
                "data; set it > 0 (e.g. 0.1) or to -1 (Fed-LTP's own 0.1)"
            )
        if self.fedltp_delta >= 1:
            raise ConfigError("run-config key 'fedltp-delta': must be below 1")

    @property
    def validates(self) -> bool:
        """Whether clients release Laplace-noised validation counts."""
        return self.fedltp_validation_scale > 0


def retentions(settings: FedLTPSettings) -> list[float]:
    """Each sub-model's kept share per layer, largest first (the one-shot scheme: the ticket)."""
    ticket = 1.0 - settings.fedltp_pruned
    if settings.fedltp_scheme == "one-shot":
        return [ticket]
    further = 1.0 - settings.fedltp_further
    return [further**i * ticket for i in range(1, settings.fedltp_submodels + 1)]


def ticket_probabilities(scores: Sequence[float]) -> np.ndarray:
    """Eq. 10: the chance of picking each candidate, softmax of its correct-prediction count
    (raw counts, no temperature: a lead of a few predictions already decides)."""
    values = np.asarray(scores, dtype=np.float64)
    weights = np.exp(values - values.max())
    return weights / weights.sum()


def submodel_for(position: int, count: int, seed: int) -> int:
    """Which of ``count`` sub-models the ``position``-th client to be first selected (0-based)
    gets: a seeded shuffle of all ``count`` for each block of ``count`` newcomers, so the first
    ``count`` clients get different ones ("without replacement at first selection")."""
    block, slot = divmod(position, count)
    deal = np.random.default_rng([seed, 0xF1D, block]).permutation(count)
    return int(deal[slot])


def decayed_lr(lr: float, decay: float, server_round: int) -> float:
    """The local step size in ``server_round``: ``lr`` decayed by ``decay`` each round."""
    return lr * decay ** max(0, server_round - 1)


def sample_rate(batch_size: int, num_train: int) -> float:
    """The Poisson rate of a DP-SGD batch: expected batch size over the records (at most 1;
    1 for a client without records, the bound that holds for any)."""
    return min(1.0, batch_size / num_train) if num_train > 0 else 1.0
