"""Itahara et al.'s hyper-parameters ("Lottery hypothesis based unsupervised pre-training for
model compression in federated learning", IEEE VTC2020-Fall, arXiv 2004.09817;
docs/algorithms/itahara.md): a ticket found by denoising-autoencoder pre-training on unlabeled
data, then federated training of that fixed sparse sub-network.

The ticket source (``itahara-ticket``) is also how the paper's baselines run in the same
harness: a random mask, or the magnitude mask of the random init, at the same density.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from fedticket.config.fields import ConfigError, setting
from fedticket.config.limits import MAX_EPOCHS, MAX_LR
from fedticket.config.sections import Section, register_section

if TYPE_CHECKING:
    from fedticket.config import RunConfig

TICKET_FILE = "ticket.npz"  # the ticket artifact in a run directory


@register_section("itahara")
@dataclass(frozen=True)
class ItaharaSettings(Section):
    """Itahara et al.'s ticket: its source, density, survivor values and pre-training."""

    public_share: ClassVar[float] = 0.1  # public-fraction = -1: 10 % of each class, unlabeled

    itahara_ticket: str = setting(
        "dae",
        "Itahara: ticket from denoising-autoencoder pre-training, the random init's magnitudes, "
        "or a random mask",
        choices=("dae", "magnitude", "random"),
    )
    itahara_density: float = setting(
        0.3, "Itahara: share of each sparse layer the ticket keeps", low=0, high=1, low_open=True
    )
    itahara_weights: str = setting(
        "pretrained",
        "Itahara: the ticket's weights keep their pre-trained values or rewind to the init",
        choices=("pretrained", "rewind"),
    )
    itahara_corruption: float = setting(
        0.5,
        "Itahara: std of the Gaussian noise added to each input pixel (normalised units)",
        low=0,
        high=100,
    )
    itahara_epochs: int = setting(
        10,
        "Itahara: epochs of autoencoder pre-training on the unlabeled data",
        low=1,
        high=MAX_EPOCHS,
    )
    itahara_lr: float = setting(
        1e-3, "Itahara: Adam step size of the pre-training", low=0, high=MAX_LR, low_open=True
    )
    itahara_ticket_from: str = setting(
        "",
        'Itahara: a saved ticket.npz to start from instead of pre-training ("": make one)',
        path=True,
    )

    def check(self, config: RunConfig) -> None:
        if config.algorithm != "itahara":
            return
        if (
            self.itahara_ticket == "dae"
            and not self.itahara_ticket_from
            and (config.public_share <= 0)
        ):
            raise ConfigError(
                "run-config key 'public-fraction': Itahara's pre-training needs unlabeled "
                "data; set it > 0 (e.g. 0.1) or to -1 (Itahara's own 0.1)"
            )
