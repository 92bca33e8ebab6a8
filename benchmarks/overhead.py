"""Framework overhead: a simulated round against the same local training in a plain torch loop.

For each local-epochs value, one ``flwr run`` of LotteryFL (or ``--algorithm``) in which every
client trains every round, then the same clients' local training (same data, model, epochs,
batch size, one torch thread per process) in a plain torch loop run in as many processes as
there are Ray actors (one per CPU).

The round is profiled from the run's own tables: ``seconds_clients`` (the server waiting for
replies) against the clients' ``client_seconds`` (whole handler) and ``train_seconds`` (SGD),
so the gap splits into: our client code around SGD, Flower's transport and scheduling (Ray
task, message copies, polling), and the server's own work (sampling, payloads, aggregation,
ledger, tables, checkpoint).

Usage::

    python -m benchmarks.overhead                        # 20 clients, epochs 2, 5 and 10
    python -m benchmarks.overhead --clients 10 --epochs 1
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from benchmarks.common import RESULTS, write_table
from fedticket.config import RunConfig
from fedticket.learn.data import DATASETS, client_data
from fedticket.learn.models import build_model
from fedticket.learn.train import train
from fedticket.simulations.launcher import launch


def plain_loop(config: RunConfig, clients: int, workers: int) -> float:
    """Seconds of one round of local training for every client in a plain torch loop, no
    Flower: ``workers`` processes (one per Ray actor, one torch thread each), each taking
    every ``workers``-th client, started together after a warm-up pass; the wall time of the
    slowest. On this machine's two cores this is what two busy processes can really do
    (about 10 % slower each than one alone), not an ideal halving."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(config, clients, w, workers, barrier, results))
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        seconds = [results.get(timeout=600) for _ in procs]
    finally:  # a worker that died leaves the others at the barrier: end them all
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
    return max(seconds)


def _worker(
    config: RunConfig,
    clients: int,
    worker: int,
    workers: int,
    barrier: Any,
    results: Any,
) -> None:
    torch.set_num_threads(1)
    data = [client_data(config, pid, clients) for pid in range(worker, clients, workers)]
    one_pass(config, data)  # warm-up: the first pass pays torch's kernel set-up (about 2 x)
    barrier.wait()
    started = time.perf_counter()
    one_pass(config, data)
    results.put(time.perf_counter() - started)


def one_pass(config: RunConfig, data: list) -> None:
    spec = DATASETS[config.dataset]
    for local in data:
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
            seed=local.partition_id,
        )


def simulated(raw: dict, clients: int, actors: int) -> dict:
    """One ``flwr run``; per train-only round (after the first, before the evaluated last one):
    the full cycle and its parts, in seconds."""
    result = launch(raw, num_supernodes=clients, cpus_per_client=1, timeout=3600)
    if result.returncode != 0 or result.run_dir is None:
        raise SystemExit(result.output[-3000:])
    rounds = pd.read_parquet(result.run_dir / "rounds.parquet").set_index("round")
    rows = pd.read_parquet(result.run_dir / "clients.parquet")
    steady = list(range(2, int(rounds.index.max())))  # round 1 pays imports; the last evaluates
    cycle = rounds["finished_s"].diff().loc[steady]  # round end to round end: everything
    train_rows = rows[(rows["phase"] == "train") & rows["round"].isin(steady)]
    per_round = train_rows.groupby("round")[["client_seconds", "train_seconds"]].sum()
    waiting = rounds.loc[steady, "seconds_clients"]
    client_parallel = per_round["client_seconds"] / actors
    return {
        "round_s": cycle.mean(),
        "waiting_s": waiting.mean(),
        "server_s": (cycle - waiting).mean(),
        "clients_sgd_s": (per_round["train_seconds"] / actors).mean(),
        "clients_other_s": (
            (per_round["client_seconds"] - per_round["train_seconds"]) / actors
        ).mean(),
        "transport_s": (waiting - client_parallel).mean(),
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--actors", type=int, default=2, help="Ray actors (1 CPU each)")
    parser.add_argument("--algorithm", default="lotteryfl")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    for epochs in args.epochs:
        raw = {
            "algorithm": args.algorithm,
            "partitioner": "iid",
            "num-rounds": args.rounds,
            "local-epochs": epochs,
            "min-train-clients": args.clients,
            "min-evaluate-clients": args.clients,
            "min-available-clients": args.clients,
            "evaluate-every": args.rounds,
            "acc-threshold": -1.0,
            "output-root": str(args.out / "runs" / "overhead"),
            "resume": False,
        }
        parts = simulated(raw, args.clients, args.actors)
        plain = plain_loop(RunConfig.from_run_config(raw), args.clients, args.actors)
        rows.append(
            {"clients": args.clients, "local_epochs": epochs, "plain_loop_s": plain}
            | parts
            | {"overhead_ratio": parts["round_s"] / plain}
        )
    table = pd.DataFrame(rows)
    write_table(table, args.out, f"overhead_{args.algorithm}_{args.clients}clients")
    return table


if __name__ == "__main__":
    main()
