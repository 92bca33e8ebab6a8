"""Itahara et al.'s pre-trained ticket against the baselines it is compared with (arXiv
2004.09817: "35 % less traffic and computation time ... when achieving a certain test
accuracy").

Runs ``simulations/presets/itahara-mnist.toml`` (10 clients, 5 per round, Dirichlet alpha 1,
tickets at 30 % per layer) through ``flwr run`` for each variant and seed:

- **DAE ticket**: pre-trained as a denoising autoencoder on the server's unlabeled share,
  pruned by magnitude, pre-trained survivors kept (the preset); **DAE ticket, rewound**: the
  same mask from the init's values;
- **magnitude ticket**: the random init's own top 30 % per layer; **random ticket**: a random
  mask with the same per-layer counts;
- **dense FedAvg**: no mask (the same client data: ``public-fraction`` held out too).

Per run, until the ``global`` accuracy (the server's model on the held-out test pool, the same
protocol for all) first reaches ``--target``: rounds, **traffic** (the ledger's message bytes,
both directions), **client computation**: measured (the clients' training seconds summed; dense
kernels here, so unstructured sparsity saves no time) and **modelled** (multiply-accumulates of
the kept weights: each layer's kept count x its output positions, x 3 for the forward and
backward passes, x samples trained). The server's pre-training is not a client cost and is not
counted. Another target needs no new runs: ``--summarise``.

Usage::

    python -m benchmarks.itahara                 # 5 variants x 3 seeds, 30 rounds
    python -m benchmarks.itahara --sensitivity   # the autoencoder's noise, 2 x 3 runs
    python -m benchmarks.itahara --rounds 5 --seeds 1 --variants "DAE ticket" "dense FedAvg"
    python -m benchmarks.itahara --target 0.9 \
        --summarise benchmarks/results/itahara_mnist-offline_30rounds_runs.csv
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmarks.common import (
    Variant,
    add_variants_option,
    base_overrides,
    benchmark_parser,
    run_seeded,
    write_table,
)
from fedticket.analysis.summaries import mean_std
from fedticket.config import RunConfig
from fedticket.learn.models import model_for

PRESET = "itahara-mnist.toml"
VARIANTS: list[Variant] = [
    ("DAE ticket", PRESET, {}),
    ("DAE ticket, rewound", PRESET, {"itahara-weights": "rewind"}),
    ("magnitude ticket", PRESET, {"itahara-ticket": "magnitude"}),
    ("random ticket", PRESET, {"itahara-ticket": "random"}),
    ("dense FedAvg", PRESET, {"algorithm": "fedavg"}),
]
#: ``--sensitivity``: the autoencoder's noise with longer pre-training
SENSITIVITY: list[Variant] = [
    ("DAE ticket, noise 0.2", PRESET, {"itahara-corruption": 0.2, "itahara-epochs": 30}),
    ("DAE ticket, noise 1.0", PRESET, {"itahara-corruption": 1.0, "itahara-epochs": 30}),
]


def output_positions(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Per conv / linear weight, how many outputs each weight contributes to per sample (a
    conv's output positions; 1 for a linear layer)."""
    positions: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):

            def hook(module, _inputs, output, name=name):
                per_channel = output[0].numel() // module.weight.shape[0]
                positions[f"{name}.weight"] = int(per_channel)

            hooks.append(module.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for hook in hooks:
        hook.remove()
    return positions


def macs_per_sample(run_dir: Path) -> float:
    """Modelled multiply-accumulates of one training sample (forward and backward: x 3) under
    the run's masks (dense where a layer has none)."""
    config = RunConfig.from_run_config(
        {
            k: v
            for k, v in json.loads((run_dir / "config.json").read_text()).items()
            if k != "environment"
        }
    )
    model = model_for(config)
    from fedticket.learn.data import DATASETS

    positions = output_positions(model, DATASETS[config.dataset].input_shape)
    kept = {name: model.state_dict()[name].numel() for name in positions}
    ticket = run_dir / "ticket.npz"
    if ticket.exists():
        with np.load(ticket, allow_pickle=False) as archive:
            for name in positions:
                if f"mask/{name}" in archive.files:
                    kept[name] = int(archive[f"mask/{name}"].sum())
    return 3.0 * sum(kept[name] * positions[name] for name in positions)


def to_target(run_dir: Path, target: float) -> dict:
    """Rounds, traffic, measured and modelled client computation until ``global`` accuracy
    first reaches ``target`` (NaN where it never does)."""
    rounds = pd.read_parquet(run_dir / "rounds.parquet").set_index("round")
    comm = pd.read_parquet(run_dir / "comm.parquet")
    clients = pd.read_parquet(run_dir / "clients.parquet")
    train = clients[(clients["phase"] == "train") & (clients["status"] == "ok")]
    reached = rounds.index[rounds["global_accuracy"] >= target]
    if len(reached) == 0:
        return dict.fromkeys(
            ("rounds_to_target", "MB_to_target", "train_s_to_target", "GMAC_to_target"), math.nan
        )
    first = int(reached[0])
    config = json.loads((run_dir / "config.json").read_text())
    samples = train.loc[train["round"] <= first, "num_examples"].sum() * config["local-epochs"]
    return {
        "rounds_to_target": first,
        "MB_to_target": float(comm.loc[comm["round"] <= first, "message_bytes"].sum()) / 1e6,
        "train_s_to_target": float(train.loc[train["round"] <= first, "train_seconds"].sum()),
        "GMAC_to_target": float(samples * macs_per_sample(run_dir)) / 1e9,
    }


def summarise(name: str, run_dir: Path, seconds: float) -> dict:
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    evaluated = rounds.dropna(subset=["global_accuracy"])
    return {
        "variant": name,
        "final_global": float(evaluated["global_accuracy"].tail(3).mean()),
        "MB_total": float(pd.read_parquet(run_dir / "comm.parquet")["message_bytes"].sum()) / 1e6,
        "density": float(rounds["mean_density"].dropna().iloc[-1]),
        "wall_s": seconds,
        "run_dir": str(run_dir),
    }


def cost_table(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    """Mean +- std over the seeds that reach ``target`` of each cost, the seeds reaching it,
    and each cost's saving against dense FedAvg and against the best baseline ticket."""
    costs = pd.DataFrame([to_target(Path(d), target) for d in runs["run_dir"]])
    runs = pd.concat([runs.reset_index(drop=True), costs], axis=1)
    rows = []
    for name, group in runs.groupby("variant", sort=False):
        hit = group.dropna(subset=["rounds_to_target"])
        row = {"variant": name, f"seeds reaching {target:g}": f"{len(hit)}/{len(group)}"}
        for column in ("rounds_to_target", "MB_to_target", "train_s_to_target", "GMAC_to_target"):
            row[column] = mean_std(float(hit[column].mean()), float(hit[column].std()), 2)
            row[f"_{column}"] = float(hit[column].mean()) if len(hit) else math.nan
        row["final_global"] = mean_std(
            float(group["final_global"].mean()), float(group["final_global"].std())
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    means = table.set_index("variant")
    baselines = [v for v in ("magnitude ticket", "random ticket") if v in means.index]
    for column, label in (("_MB_to_target", "traffic"), ("_GMAC_to_target", "compute")):
        if "dense FedAvg" in means.index:
            table[f"{label} saved vs dense"] = [
                f"{1 - means.loc[v, column] / means.loc['dense FedAvg', column]:+.0%}"
                for v in table["variant"]
            ]
        if baselines:
            best = min(means.loc[b, column] for b in baselines)
            table[f"{label} saved vs best baseline ticket"] = [
                f"{1 - means.loc[v, column] / best:+.0%}" for v in table["variant"]
            ]
    return table.drop(columns=[c for c in table.columns if c.startswith("_")])


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__.splitlines()[0])
    add_variants_option(parser)
    parser.add_argument("--target", type=float, default=0.85, help="global accuracy to reach")
    parser.add_argument("--summarise", type=Path, default=None, help="a runs CSV: tables only")
    parser.add_argument(
        "--sensitivity", action="store_true", help="run the noise variants (SENSITIVITY) instead"
    )
    args = parser.parse_args(argv)
    if args.summarise is not None:
        runs = pd.read_csv(args.summarise)
        stem = args.summarise.name.removesuffix("_runs.csv")
    else:
        overrides = base_overrides(args) | {"num-rounds": args.rounds or 30}
        chosen = SENSITIVITY if args.sensitivity else VARIANTS
        runs = run_seeded(chosen, args.variants, args.seeds, overrides, summarise)
        kind = "_sensitivity" if args.sensitivity else ""
        stem = f"itahara{kind}_{args.dataset}_{overrides['num-rounds']}rounds"
        args.out.mkdir(parents=True, exist_ok=True)
        runs.to_csv(args.out / f"{stem}_runs.csv", index=False)
    write_table(cost_table(runs, args.target), args.out, f"{stem}_costs_target{args.target:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
