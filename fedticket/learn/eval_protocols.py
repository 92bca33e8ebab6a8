"""Evaluation protocols: one set of named accuracies, measured the same way for every algorithm.

The papers this project reproduces do not score the same thing. LotteryFL's code reports each
client's best-ever accuracy (post-training models included) on 80 random images of its local
test blocks, against FedAvg's global accuracy on the whole test set; FedLTN and FLASH report
again other figures. fedticket scores every algorithm under all four protocols, each in its
own column, so a table never compares two of them without saying so:

- **served**: the model the client receives (theta_g * m_k; FedAvg: theta_g), before it trains,
  on the client's whole local test set.
- **local**: the client's own model after its most recent local training (for FedAvg that is
  FedAvg plus local fine-tuning, the fair personalised baseline), on the same test set, with
  its age in rounds (``local_age``: rounds since it trained).
- **global**: the server's model on a held-out test set of all classes
  (``fedticket.learn.data.global_test_set``), where the algorithm has a whole global model (FedLTN's
  BatchNorm never reaches the server: NaN there).
- **reference**: LotteryFL's code's metric (lotteryFL.py E1/R6, spec bug B6): a running maximum
  over every evaluation and every post-training score, each on ``REFERENCE_IMAGES`` random
  local-test images. Deviation: clients are not counted twice in the mean (the code counts a
  round's trained clients again).
"""

from __future__ import annotations

import math

import numpy as np

PROTOCOLS: dict[str, str] = {
    "served": "received model (theta_g * m_k) before training, whole local test set",
    "local": "client's model after its latest local training, whole local test set",
    "global": "server's model on the held-out test set of all classes",
    "reference": "best-ever (post-training included) on 80 random local-test images "
    "(LotteryFL's code)",
}
#: images per reference score: LotteryFL's code stops its shuffled test loader after 2 batches of 40
REFERENCE_IMAGES = 80


def reference_sample(num_test: int, seed: int) -> np.ndarray:
    """A fresh random subset of ``REFERENCE_IMAGES`` local-test indices (all when fewer)."""
    rng = np.random.default_rng(seed)
    if num_test <= REFERENCE_IMAGES:
        return np.arange(num_test)
    return np.sort(rng.choice(num_test, size=REFERENCE_IMAGES, replace=False))


def running_best(previous: float, score: float) -> float:
    """Best-ever so far; a NaN score (no test images) leaves it as it was."""
    if math.isnan(score):
        return previous
    return score if math.isnan(previous) else max(previous, score)
