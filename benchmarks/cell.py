"""CELL against LotteryFL and FedAvg on one setup (Seo et al., SPAWC 2021, Tables I-II).

Runs ``simulations/presets/cell-mnist.toml`` (40 users of 3 label shards, all users every
round, E = 10) through ``flwr run`` for every variant and seed, with one link model (20 Mbit/s
down, 2 up: the uplink-poor cell the paper argues from) and one straggler mix (a seeded quarter
of the users 4 x slower). LotteryFL prunes to the same 80 % as CELL. Per run:

- accuracy under every evaluation protocol (``fedticket.learn.eval_protocols``); the paper's
  "personalized accuracy" is ``served``: the model each user is sent, under its own mask, on its
  own test set;
- **bytes until a target accuracy**: the ledger's message bytes, both directions, up to the
  first evaluation whose ``served`` accuracy reaches ``--target`` (a broadcast counts once);
- **modelled wall time**: per round, the slowest participant's downlink + local epochs at its
  speed + uplink (``fedticket.algorithms.cell.modelled_round_seconds``, each user on its own
  link; CELL's downlink is its broadcast), summed over rounds; CELL with a deadline leaves the
  late users out instead of waiting.

Usage::

    python -m benchmarks.cell                     # 4 variants x 3 seeds, 40 rounds
    python -m benchmarks.cell --rounds 10 --seeds 1 --variants CELL LotteryFL
    python -m benchmarks.cell --summarise benchmarks/results/cell_mnist-offline_40rounds_runs.csv \
        --target 0.7                              # the tables again, another target
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pandas as pd

from benchmarks.common import (
    PRESETS,
    Variant,
    add_variants_option,
    base_overrides,
    benchmark_parser,
    run_metrics,
    run_seeded,
    write_reproduction,
    write_table,
)
from fedticket.algorithms.cell import modelled_round_seconds, simulated_slowdowns
from fedticket.analysis.summaries import mean_std, over_seeds

PRESET = "cell-mnist.toml"
SHARED = {
    "link-down-mbps": 20.0,
    "link-up-mbps": 2.0,
    "evaluate-every": 2,
    "cell-slow-share": 0.25,
    "cell-slowdown": 4.0,
}
LOTTERY = {"acc-threshold": 0.5, "prune-rate": 0.2, "target-density": 0.2, "rewind": "init"}
VARIANTS: list[Variant] = [
    ("FedAvg", PRESET, SHARED | {"algorithm": "fedavg"}),
    ("LotteryFL", PRESET, SHARED | LOTTERY | {"algorithm": "lotteryfl"}),
    ("CELL", PRESET, SHARED),
    ("CELL deadline 1.5 s", PRESET, SHARED | {"cell-deadline": 1.5}),
]
#: the paper reports every method's personalised accuracy on each user's own test data
PAPER_PROTOCOL = dict.fromkeys((name for name, _, _ in VARIANTS), "served")


def to_target(run_dir: Path, target: float) -> dict:
    """Rounds and message bytes until ``served`` accuracy first reaches ``target``."""
    rounds = pd.read_parquet(run_dir / "rounds.parquet").set_index("round")
    comm = pd.read_parquet(run_dir / "comm.parquet")
    cumulative = comm.groupby("round")["message_bytes"].sum().cumsum()
    reached = rounds.index[rounds["served_accuracy"] >= target]
    if len(reached) == 0:
        return {"rounds_to_target": math.nan, "MB_to_target": math.nan}
    first = int(reached[0])
    return {"rounds_to_target": first, "MB_to_target": float(cumulative.loc[first]) / 1e6}


def modelled_seconds(run_dir: Path, config: dict) -> float:
    """The run's modelled wall time (see the module docstring)."""
    clients = pd.read_parquet(run_dir / "clients.parquet")
    comm = pd.read_parquet(run_dir / "comm.parquet")
    train = clients[(clients["phase"] == "train") & (clients["status"] == "ok")]
    num_partitions = int(config["min-available-clients"])
    mix = simulated_slowdowns(
        num_partitions, int(config["seed"]), config["cell-slow-share"], config["cell-slowdown"]
    )
    rows = comm[comm["kind"] == "train"]
    broadcast = rows[rows["channel"] == "broadcast"].set_index("round")["transfer_seconds"]
    down = rows[(rows["direction"] == "down")].groupby(["round", "partition_id"])
    up = rows[rows["direction"] == "up"].groupby(["round", "partition_id"])["transfer_seconds"]
    down_seconds, up_seconds = down["transfer_seconds"].sum(), up.sum()
    deadline = float(config.get("cell-deadline", 0.0))
    total = 0.0
    for server_round, group in train.groupby("round"):
        times = []
        for row in group.itertuples():
            key = (server_round, row.partition_id)
            own_down = broadcast.get(server_round, 0.0) + down_seconds.get(key, 0.0)
            times.append(
                modelled_round_seconds(
                    own_down,
                    int(row.num_examples),
                    int(config["local-epochs"]),
                    float(config.get("cell-samples-per-second", 1000.0)),
                    mix[row.partition_id],
                    up_seconds.get(key, math.nan),
                )
            )
        slowest = max(times)
        total += min(slowest, deadline) if deadline > 0 else slowest
    return total


def cost_table(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    """Mean +- std over seeds of the cost measures; bytes and rounds to ``target`` are
    recomputed from each run's tables (another target needs no new runs: ``--summarise``) and
    averaged over the seeds that reach it, with how many did."""
    reached = pd.DataFrame([to_target(Path(d), target) for d in runs["run_dir"]])
    runs = runs.drop(columns=[c for c in reached.columns if c in runs]).join(reached)
    seeds = over_seeds(runs.drop(columns=["run_dir"]), ["variant"])
    hits = runs.dropna(subset=["rounds_to_target"])
    hit_seeds = over_seeds(
        hits[["variant", "seed", "rounds_to_target", "MB_to_target"]], ["variant"]
    )
    hit_seeds = seeds[["variant"]].merge(hit_seeds, on="variant", how="left")

    def shown(table: pd.DataFrame, column: str, digits: int) -> list[str]:
        pairs = zip(table[f"{column}_mean"], table[f"{column}_std"], strict=True)
        return [mean_std(m, s, digits) for m, s in pairs]

    counts = runs.groupby("variant")["rounds_to_target"].agg(
        lambda v: f"{v.notna().sum()}/{len(v)}"
    )
    return pd.DataFrame(
        {
            "variant": seeds["variant"],
            f"seeds reaching served {target:g}": [counts[v] for v in seeds["variant"]],
            f"rounds to served {target:g}": shown(hit_seeds, "rounds_to_target", 1),
            f"MB to served {target:g}": shown(hit_seeds, "MB_to_target", 2),
            "total message MB": shown(seeds, "message_MB", 2),
            "served accuracy (last 3)": shown(seeds, "served_last3", 3),
            "final density": shown(seeds, "final_density", 3),
            "modelled wall s": shown(seeds, "modelled_s", 1),
            "seeds": seeds["seeds"],
        }
    )


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    add_variants_option(parser)
    parser.add_argument("--target", type=float, default=0.6, help="served accuracy to reach")
    parser.add_argument(
        "--summarise", type=Path, default=None, help="a runs CSV of this benchmark: tables only"
    )
    args = parser.parse_args(argv)
    if args.summarise is not None:
        runs = pd.read_csv(args.summarise)
        name = args.summarise.name.removesuffix("_runs.csv")
        tables = write_reproduction(name, runs, PAPER_PROTOCOL, args.out)
    else:
        runs, name, tables = _run(args)
    print(f"\n{name}: costs")
    write_table(cost_table(runs, args.target), args.out, f"{name}_costs")
    return tables


def _run(args) -> tuple[pd.DataFrame, str, tuple[pd.DataFrame, pd.DataFrame]]:
    overrides = base_overrides(args)
    preset = tomllib.loads((PRESETS / PRESET).read_text())
    changes = {name: c for name, _, c in VARIANTS}

    def summarise(name: str, run_dir: Path, seconds: float) -> dict:
        config = preset | overrides | changes[name]
        config["seed"] = json.loads((run_dir / "config.json").read_text())["seed"]
        return (
            {"variant": name}
            | run_metrics(run_dir)
            | {"modelled_s": modelled_seconds(run_dir, config), "wall_s": seconds}
        )

    runs = run_seeded(VARIANTS, args.variants, args.seeds, overrides, summarise)
    name = f"cell_{args.dataset}_{runs['rounds'].iloc[0]}rounds"
    return runs, name, write_reproduction(name, runs, PAPER_PROTOCOL, args.out)


if __name__ == "__main__":
    main()
