"""FedLTN (with and without Jump-Start) vs LotteryFL vs FedAvg on the same partitions and seeds.

Runs ``simulations/presets/fedltn-mnist.toml`` through ``flwr run`` (simulation engine, 10
label-skewed clients, the BN CNN) once per variant and prints one table: final personalised
accuracy (mean and spread over clients), total bytes in both directions (codec payload and
Flower message bytes), final mean density, the round at which every client's ticket reached the
target density, the mean number of training rounds a client took part in until it got there,
and wall time.

Usage::

    python -m benchmarks.fedltn                       # offline default data
    python -m benchmarks.fedltn --dataset mnist-idx   # ../shared/datasets/mnist (10,000 images)
    python -m benchmarks.fedltn --rounds 20 --variants FedLTN LotteryFL
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
    run_variants,
    write_table,
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
    comm = pd.read_parquet(run_dir / "comm.parquet")
    final = rounds.dropna(subset=["personal_accuracy"]).iloc[-1]
    done = (
        rounds[rounds["share_at_target"] >= 1.0] if "share_at_target" in rounds else rounds.iloc[:0]
    )
    return {
        "algorithm": name,
        "rounds": int(rounds["round"].max()),
        "personal_acc": final["personal_accuracy"],
        "personal_acc_std": final["personal_accuracy_std"],
        "total_payload_MB": comm["payload_bytes"].sum() / 1e6,
        "total_message_MB": comm["message_bytes"].sum() / 1e6,
        "up_message_MB": comm.loc[comm["direction"] == "up", "message_bytes"].sum() / 1e6,
        "down_message_MB": comm.loc[comm["direction"] == "down", "message_bytes"].sum() / 1e6,
        "final_density": rounds["mean_density"].dropna().iloc[-1],
        "round_all_at_target": int(done["round"].iloc[0]) if len(done) else float("nan"),
        "train_rounds_to_target": participations_to_target(clients, target),
        "wall_s": seconds,
        "run_dir": str(run_dir),
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    add_variants_option(parser)
    args = parser.parse_args(argv)
    table = run_variants(VARIANTS, args.variants, base_overrides(args), summarise)
    dense = table.loc[table["algorithm"] == "FedAvg"]
    if len(dense):
        table["message_vs_fedavg"] = dense["total_message_MB"].iloc[0] / table["total_message_MB"]
    write_table(table, args.out, f"fedltn_{args.dataset}_{table['rounds'].iloc[0]}rounds")
    return table


if __name__ == "__main__":
    main()
