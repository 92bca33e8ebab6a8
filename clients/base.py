"""The client base: the algorithm steps every client shares (``FederatedClient``) and the
registry of client algorithms.

A message is served by ``clients.handlers`` (decode payload -> load client state -> algorithm
step -> encode reply); an algorithm subclasses ``FederatedClient`` and writes only its steps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np
from torch import nn

from fedticket.clients.state import ClientState, Masks
from fedticket.config import RunConfig
from fedticket.learn.data import ClientData
from fedticket.learn.eval_protocols import reference_sample, running_best
from fedticket.learn.models import load_state_arrays
from fedticket.learn.train import EvalStats
from fedticket.learn.train import evaluate as evaluate_model
from fedticket.registry import Registry
from fedticket.sparse.masks import kept_share as density

__all__ = ["CLIENTS", "ClientState", "FederatedClient", "Masks", "density", "register_client"]

log = logging.getLogger("flwr")
#: algorithm name -> client class; importing ``clients`` registers every algorithm
CLIENTS: Registry[type[FederatedClient]] = Registry("client algorithm", ("fedticket.clients",))


def register_client(name: str) -> Callable[[type[FederatedClient]], type[FederatedClient]]:
    def wrap(cls: type[FederatedClient]) -> type[FederatedClient]:
        cls.name = name
        CLIENTS.add(name, cls)
        return cls

    return wrap


class FederatedClient:
    """One client's algorithm steps. ``model`` holds the architecture; tensors come in and go
    out as name -> numpy dicts, masks as name -> bool arrays (None = dense). ``stage`` is the
    message's algorithm stage ("" for a plain round; ``Instructions.stage``)."""

    name: ClassVar[str] = ""
    #: True: BatchNorm tensors are personal client state, never sent (FedLTN's local BN). The
    #: algorithm's strategy must say the same (``SparseStrategy.local_batchnorm``).
    local_batchnorm: ClassVar[bool] = False
    #: False: the client refuses a train message that asks it to evaluate first (the
    #: ``evaluate-round`` header): its evaluation is of another model than it trains (Fed-LTP,
    #: where it would also be a privacy release nobody accounts for; CELL). Must match the
    #: strategy's ``SparseStrategy.fuses_evaluation``.
    fuses_evaluation: ClassVar[bool] = True

    def __init__(
        self,
        config: RunConfig,
        data: ClientData,
        state: ClientState,
        model: nn.Module,
        stage: str = "",
    ) -> None:
        self.config = config
        self.data = data
        self.state = state
        self.model = model
        self.stage = stage

    def seed_for(self, server_round: int, purpose: int = 0) -> int:
        """A training seed unique to (run seed, round, partition): runs repeat exactly."""
        seq = np.random.SeedSequence(
            [self.config.seed, server_round, self.data.partition_id, purpose]
        )
        return int(seq.generate_state(1, dtype=np.uint32)[0])

    def lr_for(self, server_round: int) -> float:
        """``lr`` in round 1, decayed geometrically to ``lr-end`` in the last round (FLASH's
        0.1 -> 0.001 schedule over the run's rounds; the reference code divides by 1000
        rounds whatever the run's length, bug 3)."""
        config = self.config
        if config.lr_end <= 0 or config.num_rounds <= 1:
            return config.lr
        progress = (min(server_round, config.num_rounds) - 1) / (config.num_rounds - 1)
        return config.lr * (config.lr_end / config.lr) ** progress

    def fit(
        self, server_round: int, arrays: dict[str, np.ndarray], masks: Masks | None
    ) -> tuple[dict[str, np.ndarray], Masks | None, dict[str, float]]:
        """Train on the received tensors; return the reply tensors, the mask they are kept
        under (the received one unless the algorithm changed it) and metrics."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation protocols
    def evaluate(
        self, server_round: int, arrays: dict[str, np.ndarray], masks: Masks | None
    ) -> dict[str, float]:
        """The client-side protocols (``fedticket.learn.eval_protocols``): the served model and the
        client's own latest trained model on its whole local test set, and the reference
        best-ever score updated with the served model on a random 80-image sample."""
        served = self.score(arrays)
        metrics = {
            "num-examples": served.num_examples,
            "served-loss": served.loss,
            "served-accuracy": served.accuracy,
        }
        book = self.state.counters("protocols")
        trained = self.state.arrays("trained")
        if trained is not None:
            local = self.score(trained)
            age = server_round - int(book.get("trained-round", server_round))
        else:
            local, age = EvalStats(math.nan, math.nan, 0), math.nan
        metrics |= {"local-loss": local.loss, "local-accuracy": local.accuracy, "local-age": age}
        metrics["reference-accuracy"] = self.update_reference(server_round, arrays, purpose=1)
        return metrics | {"density": density(masks)}

    def after_fit(self, server_round: int, arrays: dict[str, np.ndarray]) -> None:
        """Keep the trained model (the ``local`` protocol) and score it for the reference
        protocol's best-ever, as LotteryFL's code scores every post-training model (R6)."""
        self.state.save_arrays("trained", arrays)
        book = self.state.counters("protocols") | {"trained-round": server_round}
        self.state.save_counters(book, "protocols")
        self.update_reference(server_round, arrays, purpose=2)

    def score(self, arrays: Mapping[str, np.ndarray], pick: np.ndarray | None = None) -> EvalStats:
        """``arrays`` on the local test set (only the ``pick`` indices when given)."""
        load_state_arrays(self.model, arrays)
        x, y = self.data.x_test, self.data.y_test
        if pick is not None:
            x, y = x[pick], y[pick]
        return evaluate_model(self.model, x, y, batch_size=self.config.eval_batch_size)

    def update_reference(
        self, server_round: int, arrays: Mapping[str, np.ndarray], purpose: int
    ) -> float:
        """Score ``arrays`` on a fresh random ``REFERENCE_IMAGES`` sample of the local test set
        and return the running best-ever (kept in the ``protocols`` record)."""
        seed = self.seed_for(server_round, 0x5EF0 + purpose)
        stats = self.score(arrays, reference_sample(len(self.data.y_test), seed))
        book = self.state.counters("protocols")
        best = running_best(float(book.get("reference-best", math.nan)), stats.accuracy)
        self.state.save_counters(book | {"reference-best": best}, "protocols")
        return best
