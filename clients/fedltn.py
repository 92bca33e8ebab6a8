"""FedLTN client: train the personal lottery ticket, then post-prune it without rewinding; its
BatchNorm layers are personal and never leave the device.

Implementation based on Mugunthan, Lin et al., "FedLTN: Federated Learning for Sparse and
Personalized Lottery Ticket Networks", ECCV 2022; steps and open choices per
../shared/algorithms/fedltn.md (the paper's body was not readable: every [D] item there is a
choice of ours). It reuses LotteryFL's client steps (gate, masked training).

Each round the client (1) loads the received ``theta_global * m_k`` plus its own BatchNorm
tensors (gamma, beta, running statistics; the model's init the first time); (2) trains
``local-epochs`` with its mask held; (3) evaluates the *trained* model on its validation split
(``gate-data``) and, if that accuracy is strictly above ``acc-threshold`` and a layer is still
above its target count, removes floor(``prune-rate`` x alive) entries of smallest |w| per layer,
the last step clamped to exactly ceil(``target-density`` x size) per layer
(``fedticket.algorithms.fedltn``); (4) replies with the kept trained values (nothing rewinds to
theta_0), the biases and, when it pruned, its new mask. No training follows the prune in the same
round.

Jump-Start ``local`` (spec 1.5, alternative reading): on its first participation a client runs
S_js = ceil(S_total / 2) extra train -> gate -> prune cycles before the round's own cycle, with
no communication. The ``cohort`` reading is the server's (strategies/fedltn.py): the client just
starts from the ticket the server sends.

Deviations and open choices: gradients are masked (mask-based freeze, not LotteryFL's
|w| < 1e-6); the gate uses the validation split, not the test split; BN tensors are never
pruned; no fine-tuning phase; accuracy under every protocol of ``fedticket.learn.eval_protocols``
(the code's best-ever is the ``reference`` one; there is no ``global`` one: BN never leaves).
"""

from __future__ import annotations

import numpy as np

from fedticket.algorithms.fedltn import FedLTNSettings, jumpstart_steps, post_prune_counts
from fedticket.clients.base import Masks, register_client
from fedticket.clients.lotteryfl import LotteryFLClient
from fedticket.learn.models import load_state_arrays, state_arrays
from fedticket.sparse.masks import apply_masks, kept_share, prune_smallest


@register_client("fedltn")
class FedLTNClient(LotteryFLClient):
    local_batchnorm = True

    @property
    def fedltn(self) -> FedLTNSettings:
        """FedLTN's own hyper-parameters (``fedticket.algorithms.fedltn``)."""
        return FedLTNSettings.of(self.config)

    def fit(
        self, server_round: int, arrays: dict[str, np.ndarray], masks: Masks | None
    ) -> tuple[dict[str, np.ndarray], Masks | None, dict[str, float]]:
        masks = masks or self.dense_masks(arrays)
        counters = self.state.counters()
        prunes = int(counters.get("prunes", 0))
        cycles = 1
        if self.fedltn.jump_start == "local" and not counters.get("jump-started"):
            cycles += jumpstart_steps(self.lottery.prune_rate, self.lottery.target_density)
            counters["jump-started"] = server_round

        load_state_arrays(self.model, arrays)
        losses, seconds, pruned_now = [], 0.0, 0
        for cycle in range(cycles):
            stats = self.train_masked(server_round, masks, purpose=cycle)
            losses.append(stats.loss)
            seconds += stats.seconds
            gate_accuracy = self.gate_accuracy()
            counts = post_prune_counts(masks, self.lottery.prune_rate, self.lottery.target_density)
            if gate_accuracy > self.lottery.acc_threshold and any(counts.values()):
                trained = state_arrays(self.model)
                masks = prune_smallest(trained, masks, counts)
                load_state_arrays(self.model, apply_masks(trained, masks))  # no rewind
                prunes += 1
                pruned_now += 1

        counters |= {"prunes": prunes, "last-round": server_round}
        self.state.save_counters(counters)
        metrics = {
            "num-examples": len(self.data.y_train),
            "train-loss": float(np.mean(losses)),
            "train-seconds": seconds,
            "gate-accuracy": gate_accuracy,
            "pruned": float(pruned_now),
            "kept-rate": kept_share(masks),
            "prunes": prunes,
        }
        return state_arrays(self.model), masks, metrics
