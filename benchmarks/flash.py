"""FLASH vs dense FedAvg: SPDST, JMWST and hetero-FLASH at densities 0.05 and 0.2, same seeds.

Runs ``simulations/presets/flash-mnist.toml`` through ``flwr run`` (20 simulated clients) and
prints one table: global accuracy (the global sub-model on the union of the clients' local test
splits), total bytes both directions, bytes until the run first reaches 95 % of the dense
model's final accuracy, and the consensus: mean pairwise Jaccard overlap of the clients' masks
before the server's consensus step, and of each client's mask with the consensus after it.

Usage::

    python -m benchmarks.flash                      # 7 runs of 100 rounds (about 8 minutes)
    python -m benchmarks.flash --rounds 30 --densities 0.2
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from benchmarks.common import (
    base_overrides,
    benchmark_parser,
    cumulative_message_bytes,
    run_preset,
    write_table,
)

PRESET = "flash-mnist.toml"


def summarise(name: str, density: float, run_dir: Path, seconds: float, target: float) -> dict:
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    comm = pd.read_parquet(run_dir / "comm.parquet")
    evaluated = rounds.dropna(subset=["global_accuracy_pooled"])
    cumulative = cumulative_message_bytes(rounds)
    reached = evaluated[evaluated["global_accuracy_pooled"] >= target]
    return {
        "method": name,
        "density": density,
        "global_acc": evaluated["global_accuracy_pooled"].iloc[-1],
        "total_payload_MB": comm["payload_bytes"].sum() / 1e6,
        "total_message_MB": comm["message_bytes"].sum() / 1e6,
        "MB_to_95pct_dense": cumulative.loc[reached["round"].iloc[0]] / 1e6
        if len(reached)
        else math.nan,
        "jaccard_clients_before": rounds.get("client_mask_jaccard", pd.Series([math.nan])).mean(),
        "jaccard_with_consensus_after": rounds.get(
            "clients_jaccard_vs_consensus", pd.Series([math.nan])
        ).mean(),
        "wall_s": seconds,
        "run_dir": str(run_dir),
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--densities", type=float, nargs="*", default=[0.05, 0.2])
    parser.add_argument("--modes", nargs="*", default=["spdst", "jmwst", "hetero"])
    args = parser.parse_args(argv)
    overrides = base_overrides(args)
    dense = run_preset(PRESET, overrides | {"algorithm": "fedavg"})
    dense_rounds = pd.read_parquet(dense.run_dir / "rounds.parquet").dropna(
        subset=["global_accuracy_pooled"]
    )
    target = 0.95 * dense_rounds["global_accuracy_pooled"].iloc[-1]
    rows = [summarise("FedAvg (dense)", 1.0, dense.run_dir, dense.seconds, target)]
    print(f"FedAvg: done in {dense.seconds:.0f} s", flush=True)
    for density in args.densities:
        for mode in args.modes:
            result = run_preset(PRESET, overrides | {"flash-mode": mode, "density": density})
            rows.append(summarise(f"FLASH {mode}", density, result.run_dir, result.seconds, target))
            print(f"FLASH {mode} d={density}: done in {result.seconds:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    base = table.iloc[0]
    table["payload_vs_dense"] = base["total_payload_MB"] / table["total_payload_MB"]
    table["acc_gap_pp"] = 100 * (base["global_acc"] - table["global_acc"])
    rounds = args.rounds or 100
    write_table(table, args.out, f"flash_{args.dataset}_{rounds}rounds")
    return table


if __name__ == "__main__":
    main()
