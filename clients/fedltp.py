"""Fed-LTP client: sparse-to-sparse DP-SGD on the sub-model the server sent, and a
Laplace-noised validation count of the global model.

Implementation based on Shi et al., arXiv 2305.01387, Algorithm 2 lines 12-17 and section 4.4;
every open point and our choice is in docs/algorithms/fedltp.md (sections 1.3-1.4).

- **fit**: ``fedltp-local-steps`` DP-SGD steps (``fedticket.learn.dp_train``: Poisson batches of
  expected size ``batch-size``, per-example clipping to ``fedltp-clip``, Gaussian noise of std
  ``fedltp-noise`` x clip on the kept coordinates) under the received mask, momentum
  ``momentum``, step size ``lr`` decayed by ``fedltp-lr-decay`` per round; the mask never
  changes. The upload is the trained sub-model. The reply's train loss is NaN: any figure of the
  training records beyond the noisy model is a release the accountant does not count.
- **evaluate**: the shared protocols, plus the global model's correct count on the validation
  split with Lap(``fedltp-validation-scale``) noise (sensitivity 1), and the split's size.
- **noise** (``fedltp-noise-source``): ``os`` draws it from the operating system (private);
  ``seeded`` from the run seed, so a simulation repeats exactly but a server that knows the seed
  could subtract it: for experiments only.
"""

from __future__ import annotations

import math
import secrets

import numpy as np

from fedticket.algorithms.fedltp import FedLTPSettings, decayed_lr, sample_rate
from fedticket.clients.base import FederatedClient, Masks, register_client
from fedticket.learn.dp_train import train_private
from fedticket.learn.models import load_state_arrays, state_arrays
from fedticket.learn.train import evaluate as evaluate_model
from fedticket.sparse.masks import Mask

TRAIN_NOISE, VALIDATION_NOISE = 0xD9, 0x1A9


@register_client("fedltp")
class FedLTPClient(FederatedClient):
    fuses_evaluation = False  # see FederatedClient.fuses_evaluation

    @property
    def fedltp(self) -> FedLTPSettings:
        """Fed-LTP's hyper-parameters (``fedticket.algorithms.fedltp``)."""
        return FedLTPSettings.of(self.config)

    def noise_seed(self, server_round: int, purpose: int) -> int:
        """The seed of this round's noise (module docstring: ``fedltp-noise-source``)."""
        if self.fedltp.fedltp_noise_source == "os":
            return secrets.randbits(63)
        return self.seed_for(server_round, purpose)

    def fit(
        self, server_round: int, arrays: dict[str, np.ndarray], masks: Masks | None
    ) -> tuple[dict[str, np.ndarray], Masks | None, dict[str, float]]:
        settings, config, data = self.fedltp, self.config, self.data
        if len(data.y_train) == 0:  # no records: nothing to learn from, nothing released
            metrics = {"num-examples": 0, "train-loss": math.nan, "noisy-steps": 0}
            return arrays, masks, metrics
        load_state_arrays(self.model, arrays)
        stats = train_private(
            self.model,
            data.x_train,
            data.y_train,
            steps=settings.fedltp_local_steps,
            sample_rate=sample_rate(config.batch_size, len(data.y_train)),
            clip=settings.fedltp_clip,
            noise_multiplier=settings.fedltp_noise,
            lr=decayed_lr(config.lr, settings.fedltp_lr_decay, server_round),
            momentum=config.momentum,
            mask=Mask.from_numpy(masks) if masks is not None else None,
            seed=self.noise_seed(server_round, TRAIN_NOISE),
        )
        metrics = {
            "num-examples": len(data.y_train),
            "train-loss": math.nan,
            "train-seconds": stats.seconds,
            "noisy-steps": stats.steps,
            "clipped-share": stats.clipped_share,
        }
        return state_arrays(self.model), masks, metrics

    def evaluate(
        self, server_round: int, arrays: dict[str, np.ndarray], masks: Masks | None
    ) -> dict[str, float]:
        metrics = super().evaluate(server_round, arrays, masks)
        settings, data = self.fedltp, self.data
        if not settings.validates or len(data.y_val) == 0:
            return metrics
        load_state_arrays(self.model, arrays)
        stats = evaluate_model(
            self.model, data.x_val, data.y_val, batch_size=self.config.eval_batch_size
        )
        rng = np.random.default_rng(self.noise_seed(server_round, VALIDATION_NOISE))
        correct = round(stats.accuracy * len(data.y_val))
        noisy = correct + float(rng.laplace(0.0, settings.fedltp_validation_scale))
        return metrics | {"validation-correct": noisy, "validation-size": len(data.y_val)}
