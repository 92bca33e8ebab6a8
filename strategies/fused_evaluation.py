"""``evaluate-with-train``: round r's client evaluation rides on round r+1's train messages.

A deployed round costs two Flower message round trips (train, then evaluate), each about 5 s
of Flower's own polling and process start-up on a SuperNode (benchmarks/README.md, "Deployed
rounds"). Round r's evaluate message and round r+1's train message carry the same model (the
aggregate of round r under each client's mask), so the client can run round r's evaluation
on it first and then train: one round trip a round. The protocols do not change: ``served``
is still the model a client receives before it trains, ``local`` its latest trained model
and ``reference`` the running best, scored in the same order and with the same seeds as an
evaluate message would, so with the same clients the accuracy columns are the same numbers.

What does change, and is written in the tables:
- the clients evaluated for round r are round r+1's trained clients (fraction-train), not a
  fraction-evaluate sample; the last round is evaluated by evaluate messages as usual;
- the ledger has no evaluate messages for a fused round: the evaluation's bytes (its metrics)
  are in round r+1's train replies;
- round r's row is written once round r+1's replies are in; its ``seconds`` and
  ``seconds_clients`` are its training and global evaluation only (the clients' evaluation
  runs inside round r+1's messages), and a round resumed from a checkpoint has NaN there;
- a train message that fails takes its evaluation with it (an evaluate failure row each).

An algorithm whose evaluate message differs from its next train message (Fed-LTP validates
the global model, not the sub-model a client trains; CELL's evaluate broadcast has its own
deadline) sets ``SparseStrategy.fuses_evaluation = False`` and the option is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedticket.learn.train import EvalStats
from fedticket.strategies.exchange import Failure, Outcome


@dataclass(frozen=True)
class RoundClose:
    """What a round's ``rounds.parquet`` row needs besides its client rows and ledger rows,
    taken when its training and global evaluation end."""

    global_stats: EvalStats
    seconds: float
    seconds_clients: float
    seconds_global: float
    finished_s: float
    extras: dict[str, float]

    @classmethod
    def resumed(cls, global_stats: EvalStats, extras: dict[str, float]) -> RoundClose:
        """A round closed before a restart: its timings were not kept."""
        return cls(global_stats, math.nan, math.nan, math.nan, math.nan, extras)


@dataclass(frozen=True)
class PendingRound:
    """A round whose client evaluation the next round's train messages carry."""

    server_round: int
    close: RoundClose


def evaluation_failures(outcome: Outcome) -> Outcome:
    """The evaluate failures that a fused train exchange's ``outcome`` means: every failed
    train message, and every good train reply whose evaluation was unusable."""
    failed = [
        Failure(f.sent, f.status, f"the train message carrying it failed: {f.reason}")
        for f in outcome.failed
    ]
    for sent, reply in outcome.ok:
        fault = reply.evaluation_fault
        if fault is not None:
            failed.append(Failure(sent, fault.status, str(fault)))
    return Outcome(failed=failed)
