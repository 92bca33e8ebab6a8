"""LotteryFL vs FedAvg on the paper's MNIST setup scaled to this machine (Table 2 direction).

Runs the presets ``simulations/presets/{lotteryfl,fedavg}-mnist.toml`` through ``flwr run``
(simulation engine, 100 clients) and prints one table: final personalised accuracy (mean and
spread over clients), total bytes both directions (payload and message), train-message bytes,
bytes until the run first reaches 95 % of its final accuracy, final mean density and wall time.

Usage::

    python -m benchmarks.lotteryfl                       # offline default data
    python -m benchmarks.lotteryfl --dataset mnist-idx   # ../shared/datasets/mnist (10,000 images)
    python -m benchmarks.lotteryfl --rounds 20           # a shorter run
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.common import (
    Variant,
    add_variants_option,
    base_overrides,
    benchmark_parser,
    cumulative_message_bytes,
    run_variants,
    write_table,
)

VARIANTS: list[Variant] = [
    ("FedAvg", "fedavg-mnist.toml", {}),
    ("LotteryFL", "lotteryfl-mnist.toml", {}),
    ("LotteryFL fp16", "lotteryfl-mnist.toml", {"value-dtype": "float16"}),
    ("LotteryFL rewind=global", "lotteryfl-mnist.toml", {"rewind": "global"}),
    (
        "LotteryFL rewind=global fp16",
        "lotteryfl-mnist.toml",
        {"rewind": "global", "value-dtype": "float16"},
    ),
]


def summarise(name: str, run_dir: Path, seconds: float) -> dict:
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    comm = pd.read_parquet(run_dir / "comm.parquet")
    evaluated = rounds.dropna(subset=["personal_accuracy"])
    final = evaluated.iloc[-1]
    cumulative = cumulative_message_bytes(rounds)
    reached = evaluated[evaluated["personal_accuracy"] >= 0.95 * final["personal_accuracy"]].iloc[0]
    train = comm[comm["kind"] == "train"]
    return {
        "algorithm": name,
        "rounds": int(rounds["round"].max()),
        "personal_acc": final["personal_accuracy"],
        "personal_acc_std": final["personal_accuracy_std"],
        "total_payload_MB": comm["payload_bytes"].sum() / 1e6,
        "total_message_MB": comm["message_bytes"].sum() / 1e6,
        "train_payload_MB": train["payload_bytes"].sum() / 1e6,
        "train_message_MB": train["message_bytes"].sum() / 1e6,
        "MB_to_95pct_final": cumulative.loc[reached["round"]] / 1e6,
        "round_95pct": int(reached["round"]),
        "final_density": rounds["mean_density"].dropna().iloc[-1],
        "wall_s": seconds,
        "run_dir": str(run_dir),
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    add_variants_option(parser)
    args = parser.parse_args(argv)
    table = run_variants(VARIANTS, args.variants, base_overrides(args), summarise)
    base = table.loc[table["algorithm"] == "FedAvg"].iloc[0]
    table["payload_vs_fedavg"] = base["total_payload_MB"] / table["total_payload_MB"]
    table["message_vs_fedavg"] = base["total_message_MB"] / table["total_message_MB"]
    write_table(table, args.out, f"lotteryfl_{args.dataset}_{table['rounds'].iloc[0]}rounds")
    return table


if __name__ == "__main__":
    main()
