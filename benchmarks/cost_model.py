"""Cost model: how a round's time, bytes and memory grow with clients per round, model size and
density, measured through ``flwr run`` and fitted, so that a user can predict a run.

FLASH (JMWST, a fixed-density consensus mask, so every steady round does the same work) on the
offline MNIST pool split IID over 40 clients (about 90 training images each), two local
epochs, 2 Ray actors of 1 CPU. One factor moves at a time from the base point (20 clients per round,
``mnist-cnn``, density 0.1). Per point: the steady round time (round end to round end, rounds
after the first and before the evaluated last), message bytes per round (both directions) and
the peak resident memory of every process of the run. The fits: round seconds = a + b x
clients per round; bytes = c + e x density x clients; bytes against the model's parameter
count (its time is listed, not fitted: it follows the model's compute, not its size; the MLP
has more parameters than the CNN and a fraction of its work).

Usage::

    python -m benchmarks.cost_model
    python -m benchmarks.cost_model --clients 5 20 --models mnist-cnn --densities 0.1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import RESULTS, write_table
from benchmarks.scale import launch_measuring_memory
from fedticket.learn.data import DATASETS
from fedticket.learn.models import build_model

NUM_CLIENTS = 40
BASE = {"clients_per_round": 20, "model": "mnist-cnn", "density": 0.1}


def parameters(model: str) -> int:
    spec = DATASETS["mnist-offline"]
    net = build_model(model, spec.input_shape, spec.num_classes, seed=0)
    return sum(p.numel() for p in net.parameters())


def one_point(point: dict, rounds: int, epochs: int, out: Path, work: Path) -> dict:
    config = {
        "algorithm": "flash",
        "flash-mode": "jmwst",
        "partitioner": "iid",
        "model": point["model"],
        "density": point["density"],
        "num-rounds": rounds,
        "local-epochs": epochs,
        "fraction-train": 0.0,
        "min-train-clients": point["clients_per_round"],
        "fraction-evaluate": 1e-9,  # the minimum decides
        "min-evaluate-clients": point["clients_per_round"],
        "min-available-clients": NUM_CLIENTS,
        "evaluate-every": rounds,
        "output-root": str(out / "runs" / "cost-model"),
        "resume": False,
    }
    workdir = work / f"{point['model']}-{point['clients_per_round']}-{point['density']}"
    result, memory = launch_measuring_memory(config, NUM_CLIENTS, workdir, str(point))
    table = pd.read_parquet(result.run_dir / "rounds.parquet").set_index("round")
    steady = list(range(2, rounds))
    sent = table[["message_bytes_down", "message_bytes_up"]].sum(axis=1)
    return point | {
        "parameters": parameters(point["model"]),
        "round_s": table["finished_s"].diff().loc[steady].mean(),
        "server_s": (table["seconds"] - table["seconds_clients"]).loc[steady].mean(),
        "bytes_per_round": sent.loc[steady].mean(),
        "peak_rss_MB": memory.peak / 1e6,
        "wall_s": result.seconds,
    }


def fit(x: pd.Series, y: pd.Series) -> dict:
    """Least-squares line y = intercept + slope x, with its worst relative miss on the points."""
    slope, intercept = np.polyfit(x.to_numpy(float), y.to_numpy(float), 1)
    predicted = intercept + slope * x
    return {
        "intercept": float(intercept),
        "slope": float(slope),
        "max_relative_error": float((abs(predicted - y) / y).max()),
        "points": len(x),
    }


def fits(table: pd.DataFrame) -> dict:
    base_model = table["model"] == BASE["model"]
    base_density = table["density"] == BASE["density"]
    base_clients = table["clients_per_round"] == BASE["clients_per_round"]
    by_clients = table[base_model & base_density].drop_duplicates("clients_per_round")
    by_density = table[base_model & base_clients].drop_duplicates("density")
    by_model = table[base_density & base_clients].drop_duplicates("model")
    result = {}  # a line needs two points
    if len(by_clients) >= 2:
        per_round = by_clients["clients_per_round"]
        result["round_s ~ clients_per_round"] = fit(per_round, by_clients["round_s"])
        result["peak_rss_MB ~ clients_per_round"] = fit(per_round, by_clients["peak_rss_MB"])
    if len(by_density) >= 2:
        load = by_density["density"] * by_density["clients_per_round"]
        result["bytes_per_round ~ density x clients_per_round"] = fit(
            load, by_density["bytes_per_round"]
        )
    if len(by_model) >= 2:
        result["bytes_per_round ~ parameters"] = fit(
            by_model["parameters"], by_model["bytes_per_round"]
        )
    return result


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[5, 10, 20, 40])
    parser.add_argument("--models", nargs="*", default=["mlp", "mnist-cnn", "vgg-bn"])
    parser.add_argument("--densities", type=float, nargs="*", default=[0.05, 0.1, 0.2, 0.5])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="local epochs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    points = [BASE | {"clients_per_round": k} for k in args.clients]
    points += [BASE | {"model": m} for m in args.models]
    points += [BASE | {"density": d} for d in args.densities]
    unique = list({json.dumps(p, sort_keys=True): p for p in points}.values())
    work = Path("/tmp") / f"fedticket-cost-{int(time.time())}"
    rows = []
    for point in unique:
        rows.append(one_point(point, args.rounds, args.epochs, args.out, work))
        print(f"{point}: {rows[-1]['round_s']:.2f} s/round", flush=True)
    table = pd.DataFrame(rows)
    write_table(table, args.out, "cost_model")
    trends = fits(table)
    (args.out / "cost_model_fits.json").write_text(json.dumps(trends, indent=2) + "\n")
    for name, line in trends.items():
        print(
            f"{name}: {line['intercept']:.4g} + {line['slope']:.4g} x "
            f"(worst miss {100 * line['max_relative_error']:.1f} % on {line['points']} points)"
        )
    return table


if __name__ == "__main__":
    main()
