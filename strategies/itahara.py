"""Itahara et al. server: a ticket made before round 1 (or read from a saved one), then FedAvg
of the fixed sparse sub-network.

Implementation based on Itahara, Nishio, Morikura, Yamamoto, "Lottery hypothesis based
unsupervised pre-training for model compression in federated learning", IEEE VTC2020-Fall,
arXiv 2004.09817 (abstract only: every choice is in docs/algorithms/itahara.md).

- **Ticket** (``prepare``): ``itahara-ticket`` = ``dae``, the classifier pre-trained as a
  denoising autoencoder on the server's unlabeled data (``public-fraction`` of every class, labels
  dropped, no client's), pruned by magnitude to ``itahara-density`` per sparse layer
  (``fedticket.learn.dae_ticket``); the paper's baselines in the same harness: ``magnitude`` (the
  random init's own magnitudes) and ``random``. ``itahara-weights`` keeps the pre-trained values
  or rewinds to the init.
- **Artifact**: the ticket is saved as ``ticket.npz`` in the run directory; another run starts
  from it with ``itahara-ticket-from`` (checked against the model: ``fedticket.store.tickets``).
- **Federated phase**: every client trains the same fixed mask (FedAvg's client under a mask);
  messages carry only the kept entries; the server's keeper mean, each reply first cut to the
  ticket (a wider upload cannot grow it: ``projected_replies``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from flwr.serverapp import Grid

from fedticket.algorithms.itahara import TICKET_FILE, ItaharaSettings
from fedticket.learn.dae_ticket import make_ticket
from fedticket.learn.data import DataError, public_set
from fedticket.sparse.masks import kept_share
from fedticket.store.checkpoints import check_masks, split_prefix
from fedticket.store.tickets import load_ticket, save_ticket
from fedticket.strategies.base import Masks, NodeInfo, register_strategy
from fedticket.strategies.fixed_mask import ServerMaskedFedAvg

log = logging.getLogger("flwr")


@register_strategy("itahara")
class Itahara(ServerMaskedFedAvg):
    """See the module docstring."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ticket_mask: Masks = {}

    @property
    def itahara(self) -> ItaharaSettings:
        """Itahara et al.'s hyper-parameters (``fedticket.algorithms.itahara``)."""
        return ItaharaSettings.of(self.config)

    def prepare(self, grid: Grid, initial: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        settings, config = self.itahara, self.config
        if settings.itahara_ticket_from:
            ticket, record = load_ticket(
                Path(settings.itahara_ticket_from), self.template, self.prunable, config.model
            )
            log.info("Itahara: ticket from %s (%s)", settings.itahara_ticket_from, record)
        else:
            log.info(
                "Itahara: the server makes its ticket (%s, %d epochs) before round 1",
                settings.itahara_ticket,
                settings.itahara_epochs,
            )
            unlabeled = None
            if settings.itahara_ticket == "dae":
                try:
                    unlabeled = public_set(config)[0]  # the labels are never read
                except (DataError, OSError) as exc:
                    raise DataError(
                        f"Itahara's server pre-trains on data it reads itself: {exc}"
                    ) from exc
            ticket = make_ticket(
                config,
                self.prunable,
                settings.itahara_ticket,
                settings.itahara_density,
                unlabeled=unlabeled,
                weights=settings.itahara_weights,
                corruption=settings.itahara_corruption,
                epochs=settings.itahara_epochs,
                lr=settings.itahara_lr,
            )
        record = {
            "model": config.model,
            "dataset": config.dataset,
            "seed": config.seed,
            "density": settings.itahara_density,
            "weights": settings.itahara_weights,
        }
        save_ticket(self.run_dir.path / TICKET_FILE, ticket, record)
        self.ticket_mask = ticket.mask
        log.info(
            "Itahara: %s ticket keeps %.4f of the sparse layers; autoencoder loss %s",
            ticket.source,
            kept_share(ticket.mask),
            [round(loss, 4) for loss in ticket.losses[:1] + ticket.losses[-1:]],
        )
        return ticket.weights

    def train_sample(self, server_round: int) -> list[NodeInfo]:
        """The sampled clients, each on the ticket (``masks.parquet`` shows whose mask it is)."""
        chosen = super().train_sample(server_round)
        for node in chosen:
            self.masks[node.partition_id] = self.ticket_mask
        return chosen

    def client_masks(self, server_round: int, node: NodeInfo) -> Masks:
        return self.server_mask(node)

    def server_mask(self, node: NodeInfo) -> Masks:
        return self.ticket_mask

    def extra_state(self) -> tuple[dict[str, np.ndarray], dict]:
        return {f"ticket/{k}": v for k, v in self.ticket_mask.items()}, {}

    def check_extra(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        shapes = {name: self.template[name].shape for name in self.prunable}
        check_masks("extra/ticket", split_prefix(arrays, "ticket"), shapes, complete=True)

    def restore_extra(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        self.check_extra(arrays, meta)
        self.ticket_mask = {k: v.astype(bool) for k, v in split_prefix(arrays, "ticket").items()}
