"""Fed-LTP against DP-FedAvg with the same clipping, noise and accounting (Shi et al., arXiv
2305.01387, Table 3 and Fig. 3), and against plain FedAvg for bytes.

Runs ``simulations/presets/fedltp-mnist.toml`` (10 clients, 5 per round, Dirichlet alpha 1, 50
DP-SGD steps of expected batch 15 per round, C = 1) through ``flwr run`` for each noise level
and seed:

- **Fed-LTP**: the preset (iterative scheme, ticket pruned 60 %, five nested sub-models);
- **DP-FedAvg**: the same client code, accountant and Laplace validation on the dense model
  (``fedltp-pruned = 0``, one-shot): FedAvg with our per-step DP-SGD, not Flower's client-level
  DP wrappers (those clip and noise whole updates: another privacy unit);
- **FedAvg** (no DP): plain local SGD, one epoch, on the same client data (``public-fraction``
  held out too), for the bytes and the accuracy without noise.

Per run: epsilon at delta 1e-3 (dp-accounting RDP over every noisy step, the largest client's)
and the paper's Theorem 1 figure; the global accuracy of the validated round (the model Fed-LTP
keeps, Eq. 19) and of the last round; bytes both ways. Every algorithm is scored under the same
``global`` protocol (the server's model on the held-out test pool). Noise comes from the run
seed (``fedltp-noise-source = "seeded"``) so runs repeat; a deployment draws it from the OS.

Usage::

    python -m benchmarks.fedltp                 # 3 noise levels x 2 + FedAvg, 3 seeds, 20 rounds
    python -m benchmarks.fedltp --rounds 5 --seeds 1 --noise 1.4
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from benchmarks.common import (
    Variant,
    base_overrides,
    benchmark_parser,
    run_seeded,
    write_table,
)
from fedticket.analysis.summaries import mean_std

PRESET = "fedltp-mnist.toml"
SHARED = {"fedltp-noise-source": "seeded", "fedltp-epsilon": 0.0, "evaluate-every": 1}
DENSE = {"fedltp-pruned": 0.0, "fedltp-scheme": "one-shot", "fedltp-tickets": 1}
NOISE_LEVELS = (1.0, 1.4, 2.0)


def variants(noise_levels: tuple[float, ...]) -> list[Variant]:
    found: list[Variant] = []
    for sigma in noise_levels:
        found.append((f"Fed-LTP sigma={sigma:g}", PRESET, SHARED | {"fedltp-noise": sigma}))
        found.append(
            (f"DP-FedAvg sigma={sigma:g}", PRESET, SHARED | DENSE | {"fedltp-noise": sigma})
        )
    found.append(("FedAvg (no DP)", PRESET, {"algorithm": "fedavg", "local-epochs": 1}))
    return found


def summarise(name: str, run_dir: Path, seconds: float) -> dict:
    """One run's row: privacy, accuracy of the validated and the last round, bytes."""
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    comm = pd.read_parquet(run_dir / "comm.parquet")
    last = rounds.iloc[-1]
    validated = int(last.get("validated_round", 0) or 0)
    chosen = rounds[rounds["round"] == validated]
    return {
        "variant": name,
        "sigma": float(name.split("sigma=")[1]) if "sigma=" in name else math.nan,
        "epsilon": float(last.get("privacy_epsilon", math.nan)),
        "epsilon_theorem1": float(last.get("privacy_epsilon_theorem1", math.nan)),
        "accuracy_validated": float(chosen["global_accuracy"].iloc[0])
        if len(chosen)
        else float(last["global_accuracy"]),
        "accuracy_last": float(last["global_accuracy"]),
        "validated_round": validated,
        "mb_total": float(comm["message_bytes"].sum()) / 1e6,
        "mb_up": float(comm.loc[comm["direction"] == "up", "message_bytes"].sum()) / 1e6,
        "mean_density": float(rounds["mean_density"].dropna().iloc[-1]),
        "seconds": seconds,
        "run_dir": str(run_dir),
    }


def table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean +- std over seeds per variant."""
    rows = []
    for name, group in runs.groupby("variant", sort=False):
        row = {"variant": name, "seeds": len(group)}
        for column in (
            "epsilon",
            "epsilon_theorem1",
            "accuracy_validated",
            "accuracy_last",
            "mb_total",
            "mb_up",
            "mean_density",
        ):
            row[column] = mean_std(float(group[column].mean()), float(group[column].std()))
        rows.append(row)
    return pd.DataFrame(rows)


def plot(runs: pd.DataFrame, target: Path) -> None:
    """Accuracy of the validated model against epsilon, one line per algorithm."""
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for label in ("Fed-LTP", "DP-FedAvg"):
        part = runs[runs["variant"].str.startswith(label)]
        means = (
            part.groupby("sigma")[["epsilon", "accuracy_validated"]].mean().sort_values("epsilon")
        )
        spread = part.groupby("sigma")["accuracy_validated"].std().reindex(means.index)
        axis.errorbar(
            means["epsilon"],
            means["accuracy_validated"],
            yerr=spread,
            marker="o",
            capsize=3,
            label=label,
        )
    plain = runs[runs["variant"] == "FedAvg (no DP)"]["accuracy_validated"]
    if len(plain):
        axis.axhline(plain.mean(), color="grey", linestyle="--", label="FedAvg, no DP")
    axis.set_xlabel("epsilon at delta 1e-3 (RDP, every noisy step)")
    axis.set_ylabel("global accuracy, validated round")
    axis.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, nargs="*", default=list(NOISE_LEVELS))
    args = parser.parse_args(argv)
    overrides = base_overrides(args) | {"num-rounds": args.rounds or 20}
    chosen = variants(tuple(args.noise))
    runs = run_seeded(chosen, None, args.seeds, overrides, summarise)
    stem = f"fedltp_{args.dataset}_{overrides['num-rounds']}rounds"
    args.out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.out / f"{stem}_runs.csv", index=False)
    write_table(table(runs), args.out, stem)
    plot(runs, args.out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
