"""CPU against CUDA: per-round wall time of the same runs on each device, side by side.

LotteryFL on the MNIST CNN and FLASH (JMWST) on the BatchNorm CNN, each run through
``flwr run`` once per device with the same config and seed (only ``device`` and the Ray
resources differ: one CPU per actor, and on CUDA the GPU shared by as many actors as on the
CPU, ``client-resources-num-gpus`` = 1 / actors). Reports round 1 (start-up, imports, CUDA
context) and the mean of the steady rounds (round end to round end, after the first, before
the evaluated last). Without CUDA the CUDA rows say why and carry no times.

Usage::

    python -m benchmarks.device                    # 10 clients, 6 rounds
    python -m benchmarks.device --devices cpu
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
import torch

from benchmarks.common import RESULTS, write_table
from fedticket.accelerator import DeviceError, resolve_device
from simulations.launcher import launch

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


def one_run(workload: str, device: str, args: argparse.Namespace) -> dict:
    row = {"workload": workload, "device": device}
    try:
        row["hardware"] = device_name(device)
    except DeviceError as exc:
        return row | {"hardware": "", "skipped": str(exc)}
    actors = max(1, min(args.clients, os.cpu_count() or 1))
    config = WORKLOADS[workload] | {
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
    result = launch(
        config,
        num_supernodes=args.clients,
        cpus_per_client=1,
        gpus_per_client=1 / actors if device != "cpu" else 0.0,
        timeout=3600,
    )
    if result.returncode != 0 or result.run_dir is None:
        raise SystemExit(f"{workload} on {device} failed:\n{result.output[-3000:]}")
    rounds = pd.read_parquet(result.run_dir / "rounds.parquet").set_index("round")
    steady = list(range(2, args.rounds))
    return row | {
        "actors": actors,
        "round1_s": rounds["finished_s"].iloc[0],
        "round_s": rounds["finished_s"].diff().loc[steady].mean(),
        "final_personal_accuracy": rounds["personal_accuracy"].dropna().iloc[-1],
        "skipped": "",
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = [one_run(w, d, args) for w in args.workloads for d in args.devices]
    table = pd.DataFrame(rows)
    if "round_s" in table:
        cpu = table[table["device"] == "cpu"].set_index("workload")["round_s"]
        table["speedup_vs_cpu"] = table["workload"].map(cpu) / table["round_s"]
    write_table(table, args.out, "device")
    return table


if __name__ == "__main__":
    main()
