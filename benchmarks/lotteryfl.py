"""Reproduce LotteryFL's Table 2 (accuracy and bytes against FedAvg) under two protocols.

Runs ``simulations/presets/{lotteryfl,fedavg}-mnist.toml`` through ``flwr run`` (simulation
engine, 100 label-shard clients, 20 per round) once per variant and seed, and writes two tables,
each mean +- std over seeds of the last 3 evaluations (``fedticket.analysis.summaries``):

(a) the paper's own protocol: LotteryFL's best-ever accuracy on 80 random local-test images
    (``reference``, what its code prints) against FedAvg's global accuracy (``global``);
(b) one protocol for all: every variant under served, local (for FedAvg: FedAvg plus local
    fine-tuning), global and reference.

Usage::

    python -m benchmarks.lotteryfl                        # 3 variants x 3 seeds, 100 rounds
    python -m benchmarks.lotteryfl --dataset mnist-idx    # ../shared/datasets/mnist
    python -m benchmarks.lotteryfl --rounds 20 --seeds 1  # a quick look
    python -m benchmarks.lotteryfl --variants FedAvg "LotteryFL fp16"
"""

from __future__ import annotations

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

VARIANTS: list[Variant] = [
    ("FedAvg", "fedavg-mnist.toml", {}),
    ("LotteryFL", "lotteryfl-mnist.toml", {}),
    ("LotteryFL rewind=init", "lotteryfl-mnist.toml", {"rewind": "init"}),
    ("LotteryFL fp16", "lotteryfl-mnist.toml", {"value-dtype": "float16"}),
]
DEFAULT_VARIANTS = ["FedAvg", "LotteryFL", "LotteryFL rewind=init"]
#: the protocol each variant's numbers come from in the paper (its code, spec section 4)
PAPER_PROTOCOL = {name: "global" if name == "FedAvg" else "reference" for name, _, _ in VARIANTS}


def summarise(name: str, run_dir: Path, seconds: float) -> dict:
    return {"variant": name} | run_metrics(run_dir) | {"wall_s": seconds}


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    add_variants_option(parser)
    args = parser.parse_args(argv)
    selected = args.variants or DEFAULT_VARIANTS
    runs = run_seeded(VARIANTS, selected, args.seeds, base_overrides(args), summarise)
    name = f"lotteryfl_{args.dataset}_{runs['rounds'].iloc[0]}rounds"
    return write_reproduction(name, runs, PAPER_PROTOCOL, args.out)


if __name__ == "__main__":
    main()
