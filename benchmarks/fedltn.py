"""Reproduce FedLTN's comparison (against LotteryFL and FedAvg at 90 % sparsity, Jump-Start
rounds) under two protocols.

Runs ``simulations/presets/fedltn-mnist.toml`` through ``flwr run`` (10 label-skewed clients,
the BN CNN, every client every round) once per variant and seed, and writes two tables, each
mean +- std over seeds of the last 3 evaluations (``fedticket.analysis.summaries``):

(a) the paper's own protocol: FedLTN's and LotteryFL's best-ever personalised accuracy
    (``reference``, as both codes print) against FedAvg's global accuracy (``global``);
(b) one protocol for all: served, local (FedAvg: plus local fine-tuning), global (NaN for
    FedLTN: its BatchNorm never reaches the server) and reference;
plus the round at which every client's ticket reached the target density and the training
rounds a client took until it got there (Jump-Start's claim).

Usage::

    python -m benchmarks.fedltn                       # 4 variants x 3 seeds, 40 rounds
    python -m benchmarks.fedltn --dataset mnist-idx   # ../shared/datasets/mnist (10,000 images)
    python -m benchmarks.fedltn --rounds 20 --seeds 1 --variants FedLTN LotteryFL
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import (
    Variant,
    add_variants_option,
    base_overrides,
    benchmark_parser,
    run_metrics,
    run_seeded,
    write_reproduction,
)

PRESET = "fedltn-mnist.toml"
VARIANTS: list[Variant] = [
    ("FedAvg", PRESET, {"algorithm": "fedavg"}),
    ("LotteryFL", PRESET, {"algorithm": "lotteryfl"}),
    ("FedLTN", PRESET, {}),
    ("FedLTN beta=0", PRESET, {"server-momentum": 0.0}),
    ("FedLTN JS=cohort", PRESET, {"jump-start": "cohort"}),
    ("FedLTN JS=local", PRESET, {"jump-start": "local"}),
]
DEFAULT_VARIANTS = ["FedAvg", "LotteryFL", "FedLTN", "FedLTN JS=local"]
#: the protocol each variant's numbers come from in the paper (both codes print best-ever)
PAPER_PROTOCOL = {name: "global" if name == "FedAvg" else "reference" for name, _, _ in VARIANTS}
JUMP_START = ["round_all_at_target", "train_rounds_to_target"]


def participations_to_target(clients: pd.DataFrame, target: float) -> float:
    """Mean over clients of the training rounds each took part in until its ticket first was at
    or below ``target`` density (clients that never got there are left out; NaN if none did)."""
    train = clients[(clients["phase"] == "train") & (clients["status"] == "ok")]
    counts = []
    for _pid, rows in train.sort_values("round").groupby("partition_id"):
        reached = np.flatnonzero(rows["density"].to_numpy() <= target + 1e-9)
        if len(reached):
            counts.append(reached[0] + 1)
    return float(np.mean(counts)) if counts else float("nan")


def summarise(name: str, run_dir: Path, seconds: float) -> dict:
    target = json.loads((run_dir / "config.json").read_text())["target-density"]
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    clients = pd.read_parquet(run_dir / "clients.parquet")
    done = (
        rounds[rounds["share_at_target"] >= 1.0] if "share_at_target" in rounds else rounds.iloc[:0]
    )
    return (
        {"variant": name}
        | run_metrics(run_dir)
        | {
            "round_all_at_target": int(done["round"].iloc[0]) if len(done) else float("nan"),
            "train_rounds_to_target": participations_to_target(clients, target),
            "wall_s": seconds,
        }
    )


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    add_variants_option(parser)
    args = parser.parse_args(argv)
    selected = args.variants or DEFAULT_VARIANTS
    runs = run_seeded(VARIANTS, selected, args.seeds, base_overrides(args), summarise)
    name = f"fedltn_{args.dataset}_{runs['rounds'].iloc[0]}rounds"
    return write_reproduction(name, runs, PAPER_PROTOCOL, args.out, extra=JUMP_START)


if __name__ == "__main__":
    main()
