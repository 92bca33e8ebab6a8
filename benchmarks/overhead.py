"""Framework overhead: a simulated round against the same local training in a plain torch loop.

One run of LotteryFL (FedAvg with ``--algorithm fedavg``) through ``flwr run`` with every client
training every round, then, in this process, the same clients' local training (same data, model,
epochs, batch size, one torch thread per client) in a plain loop. With ``--actors`` Ray actors
the plain loop's ideal parallel time is its total divided by the actor count; the table gives
the simulated round's wall time (rounds after the first) over that, and what the clients
themselves report as training time.

Usage::

    python -m benchmarks.overhead                    # 20 clients of 250 images, 5 rounds
    python -m benchmarks.overhead --clients 10 --epochs 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks.common import RESULTS, write_table
from fedticket.config import RunConfig
from fedticket.data import DATASETS, client_data
from fedticket.models import build_model
from fedticket.train import train
from simulations.launcher import launch


def plain_loop(config: RunConfig, clients: int) -> float:
    """Seconds of one round of local training for every client, sequentially, no Flower."""
    torch.set_num_threads(1)
    data = [client_data(config, pid, clients) for pid in range(clients)]  # loaded once, as Ray does
    one_pass(config, data)  # warm-up: the first pass pays torch's kernel set-up (about 2 x)
    started = time.perf_counter()
    one_pass(config, data)
    return time.perf_counter() - started


def one_pass(config: RunConfig, data: list) -> None:
    spec = DATASETS[config.dataset]
    for pid, local in enumerate(data):
        model = build_model(config.model, spec.input_shape, spec.num_classes, seed=config.seed)
        train(
            model,
            local.x_train,
            local.y_train,
            epochs=config.local_epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            mask=None,
            seed=pid,
        )


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--actors", type=int, default=2, help="Ray actors (1 CPU each)")
    parser.add_argument("--algorithm", default="lotteryfl")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    raw = {
        "algorithm": args.algorithm,
        "partitioner": "iid",
        "num-rounds": args.rounds,
        "local-epochs": args.epochs,
        "min-train-clients": args.clients,
        "min-evaluate-clients": args.clients,
        "min-available-clients": args.clients,
        "evaluate-every": args.rounds,
        "acc-threshold": -1.0,
        "output-root": str(args.out / "runs" / "overhead"),
        "resume": False,
    }
    result = launch(raw, num_supernodes=args.clients, cpus_per_client=1, timeout=3600)
    if result.returncode != 0 or result.run_dir is None:
        raise SystemExit(result.output[-3000:])
    rounds = pd.read_parquet(result.run_dir / "rounds.parquet")
    clients = pd.read_parquet(result.run_dir / "clients.parquet")
    train_rows = clients[(clients["phase"] == "train") & (clients["round"] > 1)]
    per_round_train = train_rows.groupby("round")["train_seconds"].sum().mean()
    simulated = rounds.loc[rounds["round"] > 1, "seconds"]
    # rounds with an evaluation carry its cost: compare train-only rounds
    train_only = simulated[(rounds.loc[rounds["round"] > 1, "round"] % args.rounds) != 0].mean()
    loop = plain_loop(RunConfig.from_run_config(raw), args.clients)
    ideal = loop / args.actors
    table = pd.DataFrame(
        [
            {
                "clients": args.clients,
                "algorithm": args.algorithm,
                "local_epochs": args.epochs,
                "actors": args.actors,
                "simulated_round_s": train_only,
                "clients_train_s_per_round": per_round_train,
                "plain_loop_s": loop,
                "plain_loop_ideal_parallel_s": ideal,
                "overhead_ratio": train_only / ideal,
            }
        ]
    )
    write_table(table, args.out, f"overhead_{args.algorithm}_{args.clients}clients")
    return table


if __name__ == "__main__":
    main()
