"""Reproduce FLASH's comparisons (JMWST vs dense at d = 0.2 and 0.05, SPDST vs JMWST) under two
protocols.

Runs ``simulations/presets/flash-mnist.toml`` through ``flwr run`` (20 simulated clients, 5 per
round) once per variant and seed, 200 rounds by default (the sparse models were still climbing
at round 100), and writes two tables, each mean +- std over seeds of the last 3 evaluations
(``fedticket.analysis.summaries``):

(a) the paper's own protocol: every variant's global model on a test set of all classes
    (``global``; FLASH reports nothing else);
(b) one protocol for all: served, local (dense: FedAvg plus local fine-tuning), global and
    reference;
plus the consensus: mean pairwise Jaccard overlap of the clients' masks before the server's
consensus step, and of each client's mask with the consensus after it.

Usage::

    python -m benchmarks.flash                           # 5 variants x 3 seeds, 200 rounds
    python -m benchmarks.flash --rounds 30 --seeds 1 --variants FedAvg "JMWST d=0.2"
    python -m benchmarks.flash --variants "hetero d=0.2"
"""

from __future__ import annotations

import math
from pathlib import Path

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

PRESET = "flash-mnist.toml"
MODE_NAMES = {"spdst": "SPDST", "jmwst": "JMWST", "hetero": "hetero"}
VARIANTS: list[Variant] = [("FedAvg (dense)", PRESET, {"algorithm": "fedavg"})] + [
    (f"{label} d={density}", PRESET, {"flash-mode": mode, "density": density})
    for density in (0.2, 0.05)
    for mode, label in MODE_NAMES.items()
]
DEFAULT_VARIANTS = ["FedAvg (dense)", "SPDST d=0.2", "JMWST d=0.2", "SPDST d=0.05", "JMWST d=0.05"]
PAPER_PROTOCOL = {name: "global" for name, _, _ in VARIANTS}
CONSENSUS = ["jaccard_clients_before", "jaccard_with_consensus_after"]
DEFAULT_ROUNDS = 200


def summarise(name: str, run_dir: Path, seconds: float) -> dict:
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    nan = pd.Series([math.nan])
    return (
        {"variant": name}
        | run_metrics(run_dir)
        | {
            "jaccard_clients_before": rounds.get("client_mask_jaccard", nan).mean(),
            "jaccard_with_consensus_after": rounds.get("clients_jaccard_vs_consensus", nan).mean(),
            "wall_s": seconds,
        }
    )


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    add_variants_option(parser)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or DEFAULT_ROUNDS
    selected = args.variants or DEFAULT_VARIANTS
    runs = run_seeded(VARIANTS, selected, args.seeds, base_overrides(args), summarise)
    name = f"flash_{args.dataset}_{args.rounds}rounds"
    return write_reproduction(name, runs, PAPER_PROTOCOL, args.out, extra=CONSENSUS)


if __name__ == "__main__":
    main()
