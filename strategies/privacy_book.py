"""What each client has spent of its privacy budget: the server's count of the DP mechanisms it
asked each client to run, and the figures they add up to (Fed-LTP, arXiv 2305.01387; every
choice in docs/algorithms/fedltp.md section 1.5).

A client's spend counts every train message it was sent (a retry too: a lost reply may still
have used its data) and every validation request; one never sampled spends nothing (no
amplification by client sampling is claimed). Each figure of the run is the largest over the
clients: epsilon from dp-accounting's RDP accountant over every noisy step, zCDP's rho on its
orders, and the paper's Theorem 1 (one composition per round) beside them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from fedticket.algorithms.fedltp import FedLTPSettings, sample_rate
from fedticket.privacy.accounting import ClientPrivacy
from fedticket.privacy.fedltp_theorem import theorem1_epsilon
from fedticket.strategies.nodes import NodeInfo


@dataclass
class PrivacyBook:
    """Per-client counts (partition id -> messages sent) and what they spend."""

    settings: FedLTPSettings
    batch_size: int
    trained: dict[int, int] = field(default_factory=dict)
    validated: dict[int, int] = field(default_factory=dict)

    def count(self, node: NodeInfo, kind: str) -> None:
        """One more ``train`` or ``validate`` request sent to ``node``."""
        book = self.trained if kind == "train" else self.validated
        book[node.partition_id] = book.get(node.partition_id, 0) + 1

    def privacy(self, node: NodeInfo) -> ClientPrivacy:
        settings = self.settings
        return _client_privacy(
            settings.fedltp_noise,
            sample_rate(self.batch_size, node.num_train),
            settings.fedltp_local_steps,
            settings.fedltp_validation_scale if settings.validates else None,
        )

    def epsilon(self, node: NodeInfo, more: int = 0) -> float:
        """``node``'s epsilon after its counts and ``more`` rounds of training and validation."""
        pid, validates = node.partition_id, self.settings.validates
        rounds = self.trained.get(pid, 0) + more
        validations = self.validated.get(pid, 0) + (more if validates else 0)
        return _spent(self.privacy(node), rounds, validations, self.settings.fedltp_delta)

    def round_cost(self, node: NodeInfo) -> tuple[float, float]:
        """(epsilon, rho) of one round of training and validation for ``node`` on its own."""
        privacy, delta = self.privacy(node), self.settings.fedltp_delta
        validations = 1 if self.settings.validates else 0
        return _spent(privacy, 1, validations, delta), _rho(privacy, 1, validations)

    def within(self, node: NodeInfo) -> bool:
        """Whether one more round keeps ``node`` within ``fedltp-epsilon`` (0: no budget)."""
        budget = self.settings.fedltp_epsilon
        return budget <= 0 or self.epsilon(node, 1) <= budget

    def columns(self, nodes: list[NodeInfo]) -> dict[str, float]:
        """The run's spend so far (``rounds.parquet``), and what one round costs a client that
        takes part (``_round``): each figure's largest over clients."""
        delta = self.settings.fedltp_delta
        rows = []
        for node in nodes:
            rounds = self.trained.get(node.partition_id, 0)
            if rounds:
                privacy = self.privacy(node)
                validations = self.validated.get(node.partition_id, 0)
                theorem1 = _theorem1(
                    rounds,
                    privacy.noise_multiplier,
                    privacy.sample_rate,
                    privacy.validation_scale,
                    delta,
                )
                rows.append((self.epsilon(node), _rho(privacy, rounds, validations), theorem1))
        epsilon, rho, theorem1 = (
            (max(column) for column in zip(*rows, strict=True)) if rows else (0.0,) * 3
        )
        one = [self.round_cost(node) for node in nodes]
        return {
            "privacy_epsilon": epsilon,
            "privacy_epsilon_round": max((e for e, _rho in one), default=0.0),
            "privacy_rho": rho,
            "privacy_rho_round": max((r for _e, r in one), default=0.0),
            "privacy_epsilon_theorem1": theorem1,
            "privacy_delta": delta,
            "privacy_most_rounds": float(max(self.trained.values(), default=0)),
        }


@functools.lru_cache(maxsize=256)
def _client_privacy(noise: float, rate: float, steps: int, scale: float | None) -> ClientPrivacy:
    return ClientPrivacy(noise, rate, steps, scale)


@functools.lru_cache(maxsize=4096)
def _spent(privacy: ClientPrivacy, rounds: int, validations: int, delta: float) -> float:
    return privacy.spent(rounds, delta, validations=validations).epsilon


@functools.lru_cache(maxsize=4096)
def _rho(privacy: ClientPrivacy, rounds: int, validations: int) -> float:
    return privacy.rho(rounds, validations)


_theorem1 = functools.lru_cache(maxsize=4096)(theorem1_epsilon)
