"""CPU against CUDA: per-round wall time of the same runs on each device, side by side.

LotteryFL on the MNIST CNN and FLASH (JMWST) on the BatchNorm CNN, each run through
``flwr run`` once per device with the same config and seed (only ``device`` and the Ray
resources differ: one CPU per actor, and on CUDA the GPU shared by as many actors as on the
CPU, ``client-resources-num-gpus`` = 1 / actors). Reports round 1 (start-up, imports, CUDA
context) and the mean of the steady rounds (round end to round end, after the first, before
the evaluated last). Without CUDA the CUDA rows say why and carry no times.

``--engine in-process`` runs the same strategy and client code through the in-process grid of
the tests (``tests/loopback.py``: every client in this process, one after another, no Ray): the
GPU machines lent here are offline and Ray's wheel (74 MB) is more than a call may carry.
``--repeat N`` runs each pair N times and says whether the tables (wall-clock columns aside)
came out identical, bit for bit.

Usage::

    python -m benchmarks.device                    # 10 clients, 6 rounds, flwr run
    python -m benchmarks.device --devices cpu
    python -m benchmarks.device --engine in-process --repeat 2 --run-config 'deterministic=true'
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
import torch

from benchmarks.common import RESULTS, write_table
from fedticket.config import RunConfig, parse_run_config_string
from fedticket.learn.torch_device import DeviceError, resolve_device
from fedticket.simulations.launcher import launch
from fedticket.strategies.reporting import WALL_CLOCK_COLUMNS

WORKLOADS = {
    "lotteryfl/mnist-cnn": {"algorithm": "lotteryfl", "model": "mnist-cnn", "acc-threshold": -1.0},
    "flash/mnist-cnn-bn": {
        "algorithm": "flash",
        "flash-mode": "jmwst",
        "model": "mnist-cnn-bn",
        "density": 0.1,
    },
}


def device_name(device: str) -> str:
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return torch.cuda.get_device_name(resolved)
    return f"CPU ({os.cpu_count()} cores)"


def one_run(workload: str, device: str, args: argparse.Namespace) -> list[dict]:
    row = {"workload": workload, "device": device}
    try:
        row["hardware"] = device_name(device)
    except DeviceError as exc:
        return [row | {"hardware": "", "skipped": str(exc)}]
    config = (
        WORKLOADS[workload]
        | {
            "device": device,
            "partitioner": "iid",
            "num-rounds": args.rounds,
            "local-epochs": args.epochs,
            "min-train-clients": args.clients,
            "min-evaluate-clients": args.clients,
            "min-available-clients": args.clients,
            "evaluate-every": args.rounds,
            "output-root": str(args.out / "runs" / "device"),
            "resume": False,
        }
        | parse_run_config_string(args.run_config)
    )
    rows, first = [], None
    for attempt in range(args.repeat):
        run_dir, actors = (
            in_process(config, args.clients)
            if args.engine == "in-process"
            else simulated(config, device, args.clients)
        )
        tables = comparable_tables(run_dir)
        first = first or tables
        rounds = pd.read_parquet(run_dir / "rounds.parquet").set_index("round")
        steady = list(range(2, args.rounds))
        rows.append(
            row
            | {
                "engine": args.engine,
                "deterministic": bool(config.get("deterministic", False)),
                "attempt": attempt + 1,
                "actors": actors,
                "round1_s": rounds["finished_s"].iloc[0],
                "round_s": rounds["finished_s"].diff().loc[steady].mean(),
                "final_served_accuracy": rounds["served_accuracy"].dropna().iloc[-1],
                "identical_to_first": all(tables[k].equals(first[k]) for k in tables),
                "skipped": "",
            }
        )
    return rows


def comparable_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The run's tables without the columns that measure time."""
    out = {}
    for name in ("rounds", "clients", "masks"):
        path = run_dir / f"{name}.parquet"
        if path.exists():
            frame = pd.read_parquet(path)
            out[name] = frame.drop(columns=[c for c in frame if c in WALL_CLOCK_COLUMNS])
    return out


def in_process(config: dict, clients: int) -> tuple[Path, int]:
    """The real strategy and client code through the tests' in-process grid (no Ray)."""
    from flwr.supercore.task_identity import TaskIdentity

    from fedticket.simulations.server_app import ALGORITHMS, run_federation
    from tests.loopback import LoopbackGrid

    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1  # as a ServerApp's
    run_config = RunConfig.from_run_config(config, algorithms=ALGORITHMS)
    return run_federation(LoopbackGrid(clients, config), run_config).run_dir.path, 1


def simulated(config: dict, device: str, clients: int) -> tuple[Path, int]:
    actors = max(1, min(clients, os.cpu_count() or 1))
    result = launch(
        config,
        num_supernodes=clients,
        cpus_per_client=1,
        gpus_per_client=1 / actors if resolve_device(device).type == "cuda" else 0.0,
        timeout=3600,
    )
    if result.returncode != 0 or result.run_dir is None:
        raise SystemExit(f"{config} on {device} failed:\n{result.output[-3000:]}")
    return result.run_dir, actors


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--engine", choices=["simulation", "in-process"], default="simulation")
    parser.add_argument("--repeat", type=int, default=1, help="runs per workload and device")
    parser.add_argument("--run-config", default="", help="'key=value ...' on top of each run")
    parser.add_argument("--name", default="device", help="stem of the CSV/Markdown files")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = [r for w in args.workloads for d in args.devices for r in one_run(w, d, args)]
    table = pd.DataFrame(rows)
    if "round_s" in table:
        first = table[(table["device"] == "cpu") & (table.get("attempt") == 1)]
        cpu = first.set_index("workload")["round_s"]
        table["speedup_vs_cpu"] = table["workload"].map(cpu) / table["round_s"]
    write_table(table, args.out, args.name)
    return table


if __name__ == "__main__":
    main()
