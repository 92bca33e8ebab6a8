"""A lottery ticket found on the server's public data before any client trains (Fed-LTP,
Shi et al., arXiv 2305.01387, Algorithm 1; docs/algorithms/fedltp.md section 1.1).

Each of M candidates starts from its own random init w0_j, trains on the public data, keeps the
``retention`` share of each prunable layer by magnitude (top-k per layer) and is reset to w0_j
under that mask. One is picked at random with probability softmax(score) (Eq. 10), its score
the correct predictions of the trained weights under its mask on the public data (our reading:
the reset ticket M * w0 scores at chance). Deviations: the mask is a top-k per layer (the text's
"prune Pr % of the parameters"; Eq. 9's threshold relative to the layer's largest magnitude
gives no fixed share); training is the project's SGD loop for whole epochs (M, k and the
optimizer are not stated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedticket.algorithms.fedltp import kept_budgets, ticket_probabilities
from fedticket.learn.models import model_for, state_arrays
from fedticket.learn.train import evaluate, train
from fedticket.sparse.consensus import top_k_masks
from fedticket.sparse.masks import Mask, Masks, apply_masks

if TYPE_CHECKING:
    from fedticket.config import RunConfig


@dataclass(frozen=True)
class Ticket:
    """The picked candidate: its reset weights (w0 under the mask), the trained weights whose
    magnitudes cut nested sub-models, the mask, every candidate's score, and which was picked."""

    weights: dict[str, np.ndarray]
    trained: dict[str, np.ndarray]
    mask: Masks
    scores: list[int]
    chosen: int


def candidate_seed(seed: int, index: int) -> int:
    """Candidate ``index``'s init seed, from the run seed."""
    return int(np.random.SeedSequence([seed, 0x71C, index]).generate_state(1)[0])


def search_ticket(
    config: RunConfig,
    x: np.ndarray,
    y: np.ndarray,
    prunable: list[str],
    retention: float,
    *,
    candidates: int,
    epochs: int,
    lr: float,
) -> Ticket:
    """Train ``candidates`` tickets on the public ``(x, y)`` and pick one (module docstring)."""
    found = []
    for index in range(candidates):
        seed = candidate_seed(config.seed, index)
        model = model_for(config, seed=seed)
        start = state_arrays(model)
        train(
            model,
            x,
            y,
            epochs=epochs,
            batch_size=config.batch_size,
            lr=lr,
            momentum=config.momentum,
            seed=seed,
        )
        trained = state_arrays(model)
        sizes = {name: trained[name].size for name in prunable}
        mask = top_k_masks({n: trained[n] for n in prunable}, kept_budgets(sizes, retention))
        Mask.from_numpy(mask).apply_to_weights(model)
        stats = evaluate(model, x, y, batch_size=config.eval_batch_size)
        found.append((apply_masks(start, mask), trained, mask, round(stats.accuracy * len(y))))
    scores = [score for *_rest, score in found]
    rng = np.random.default_rng([config.seed, 0x71C])
    chosen = int(rng.choice(len(found), p=ticket_probabilities(scores)))
    weights, trained, mask, _score = found[chosen]
    return Ticket(weights, trained, mask, scores, chosen)
