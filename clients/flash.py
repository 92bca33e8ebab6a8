"""FLASH client: train the consensus sub-model, fixed (SPDST) or evolving (JMWST, hetero).

Implementation based on Babakniya et al., TMLR 2023 (FLASH) and its reference code; steps per
../shared/algorithms/flash.md sections 1-4 (the server side is strategies/flash.py).

- Stage 1 (``stage == SENSITIVITY_STAGE``): sparse dynamic training for
  ``init-epochs`` from the received mask, a mask update at the end of every epoch but the last
  with the prune rate decayed linearly over the local steps; replies with the per-layer kept
  counts only (the figure's "sensitivity": no weights travel).
- SPDST: masked training on the received mask, which comes back unchanged.
- JMWST / hetero: the same, plus one prune-and-regrow update (``fedticket.sparse.prune_regrow``)
  after the step of batch floor(nb / 2) when training one epoch (at the end of each epoch but the
  last when more); replies with the weights under the evolved mask and that mask.

Deviation: gradients are masked too (the code masks only the weights after each step, which is
the same for plain SGD but not with momentum).
"""

from __future__ import annotations

import numpy as np

from fedticket.algorithms.flash import SENSITIVITY_STAGE, FlashSettings
from fedticket.clients.base import FederatedClient, Masks, register_client
from fedticket.learn.models import load_state_arrays, state_arrays
from fedticket.learn.train import train
from fedticket.sparse.masks import Mask
from fedticket.sparse.prune_regrow import prune_and_regrow, prune_rate_at


@register_client("flash")
class FlashClient(FederatedClient):
    @property
    def flash(self) -> FlashSettings:
        """FLASH's hyper-parameters (``fedticket.algorithms.flash``)."""
        return FlashSettings.of(self.config)

    def fit(
        self, server_round: int, arrays: dict[str, np.ndarray], masks: Masks | None
    ) -> tuple[dict[str, np.ndarray] | None, Masks | None, dict[str, float]]:
        config = self.config
        sensitivity = self.stage == SENSITIVITY_STAGE
        evolve = sensitivity or self.flash.flash_mode in ("jmwst", "hetero")
        epochs = self.flash.init_epochs if sensitivity else config.local_epochs
        load_state_arrays(self.model, arrays)
        rng = np.random.default_rng(self.seed_for(server_round, purpose=7))
        batches = -(-len(self.data.y_train) // config.batch_size)
        total_steps = batches * epochs

        def update(epoch: int, batch: int, per_epoch: int, mask: Mask | None) -> Mask | None:
            if not evolve or mask is None:
                return None
            end_of_epoch = batch == per_epoch - 1 and epoch < epochs - 1
            mid_single_epoch = epochs == 1 and batch == per_epoch // 2
            if not (end_of_epoch if epochs > 1 else mid_single_epoch):
                return None
            step = epoch * per_epoch + batch + 1
            rate = prune_rate_at(step, total_steps, self.flash.dst_prune_rate)
            return Mask.from_numpy(
                prune_and_regrow(state_arrays(self.model), mask.to_numpy(), rate, rng)
            )

        lr = 0.1 if sensitivity else self.lr_for(server_round)  # stage 1: lr-start 0.1 (spec 1.3)
        stats = train(
            self.model,
            self.data.x_train,
            self.data.y_train,
            epochs=epochs,
            batch_size=config.batch_size,
            lr=lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            mask=Mask.from_numpy(masks) if masks else None,
            seed=self.seed_for(server_round),
            step_hook=update,
        )
        final = stats.mask.to_numpy() if stats.mask is not None else None
        metrics = {
            "num-examples": len(self.data.y_train),
            "train-loss": stats.loss,
            "train-seconds": stats.seconds,
        }
        if sensitivity:
            metrics["layer-kept"] = [int(final[n].sum()) for n in final] if final else []
            return None, final, metrics
        return state_arrays(self.model), final, metrics
