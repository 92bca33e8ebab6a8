"""Deployment vs simulation on the same config, and the bytes that really cross the link.

Runs one config on Flower's simulation engine (``flwr run``) and on the Deployment Engine on
loopback (a SuperLink and N SuperNodes, gRPC) with TLS and SuperNode authentication and in
plain text, each SuperNode connected through a byte relay; then both engines again with
``evaluate-with-train`` (one message a round: ``strategies/fused_evaluation.py``). Prints the
wall time per round (rounds 2.., from the end of round 1 to the end of the run: round 1 pays
process and data start-up), the ledger's message bytes and the relay's wire bytes per direction
with their ratio, and the final accuracy (the same seeds give the same model in every engine
and mode).

Usage::

    python -m benchmarks.edge                 # LotteryFL, 3 nodes, 5 rounds (about 6 minutes)
    python -m benchmarks.edge --rounds 3 --nodes 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks.common import RESULTS, write_table
from fedticket.simulations.edge.federation import LoopbackFederation
from fedticket.simulations.launcher import LaunchResult, launch


def summarise(mode: str, result: LaunchResult, wire: tuple[float, float] | None) -> dict:
    if result.returncode != 0 or result.run_dir is None:
        raise SystemExit(f"{mode} failed:\n{result.output[-3000:]}")
    rounds = pd.read_parquet(result.run_dir / "rounds.parquet")
    comm = pd.read_parquet(result.run_dir / "comm.parquet")
    clients = pd.read_parquet(result.run_dir / "clients.parquet")
    later = clients[clients["round"] > 1]
    handler = later.groupby("phase")["client_seconds"].mean()
    up = comm.loc[comm["direction"] == "up", "message_bytes"].sum()
    down = comm.loc[comm["direction"] == "down", "message_bytes"].sum()
    row = {
        "mode": mode,
        "rounds": len(rounds),
        "wall_s": result.seconds,
        "round1_s": rounds["seconds"].iloc[0],
        # end of round 1 to the end of the run: with evaluate-with-train a round's evaluation
        # runs inside the next round's messages, so only the whole span compares
        "round_s_after_1": (rounds["finished_s"].iloc[-1] - rounds["finished_s"].iloc[0])
        / max(len(rounds) - 1, 1),
        # the round split: the server's own work, our ClientApp handler per message (data,
        # decode, the algorithm's step, encode, state), and the rest: Flower's transport,
        # polling and (deployed) the process each message's ClientApp starts and imports
        "server_s": (rounds["seconds"] - rounds["seconds_clients"]).iloc[1:].mean(),
        "handler_train_s": handler.get("train", float("nan")),
        "handler_evaluate_s": handler.get("evaluate", float("nan")),
        "ledger_MB_up": up / 1e6,
        "ledger_MB_down": down / 1e6,
        "wire_MB_up": float("nan"),
        "wire_MB_down": float("nan"),
        "wire_vs_ledger_up": float("nan"),
        "wire_vs_ledger_down": float("nan"),
        "final_accuracy": rounds["served_accuracy"].dropna().iloc[-1],
    }
    if wire is not None:
        row |= {
            "wire_MB_up": wire[0] / 1e6,
            "wire_MB_down": wire[1] / 1e6,
            "wire_vs_ledger_up": wire[0] / up,
            "wire_vs_ledger_down": wire[1] / down,
        }
    return row


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--algorithm", default="lotteryfl")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    n = args.nodes
    config = {
        "algorithm": args.algorithm,
        "num-rounds": args.rounds,
        "min-available-clients": n,
        "min-train-clients": n,
        "min-evaluate-clients": n,
        # one torch thread per client in every engine: the simulation's actors have 1 CPU
        # each, and n deployed processes of 2 threads would share 2 cores
        "client-threads": 1,
        "output-root": str(args.out / "runs"),
        "resume": False,  # a finished run of the same config would be "resumed" in no time
    }
    rows = []
    work = Path(tempfile.mkdtemp(prefix="fedticket-edge-bench-"))
    modes = [  # (name, secure; None: the simulation engine, fused evaluation)
        ("simulation", None, False),
        ("deployment TLS+auth", True, False),
        ("deployment plain", False, False),
        ("simulation, evaluate-with-train", None, True),
        ("deployment TLS+auth, evaluate-with-train", True, True),
    ]
    for mode, secure, fused in modes:
        slug = mode.replace(" ", "-").replace(",", "").replace("+", "-")
        # a distinct output root per mode: the same config hash would share one run directory
        own = config | {
            "output-root": str(args.out / "runs" / slug),
            "evaluate-with-train": fused,
        }
        wire = None
        if secure is None:
            result = launch(own, num_supernodes=n, cpus_per_client=1, workdir=work / slug)
        else:
            with LoopbackFederation(work / slug, n, secure=secure, relay=True) as fed:
                result = fed.run(own, timeout=1800)
                wire = (fed.relay.up, fed.relay.down)
        rows.append(summarise(mode, result, wire) | {"evaluate_with_train": fused})
        print(f"{mode}: {result.seconds:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    table["outside_handler_s"] = (
        table["round_s_after_1"]
        - table["server_s"]
        - table["handler_train_s"]
        - table["handler_evaluate_s"].fillna(0)
    )
    # each round against the two-message simulation (the engines' usual protocol), and
    # against the simulation run in the same mode
    table["round_s_vs_simulation"] = table["round_s_after_1"] / table["round_s_after_1"].iloc[0]
    same_mode = table.groupby("evaluate_with_train")["round_s_after_1"].transform("first")
    table["round_s_vs_simulation_same_mode"] = table["round_s_after_1"] / same_mode
    write_table(table, args.out, f"edge_{args.algorithm}_{n}nodes_{args.rounds}rounds")
    return table


if __name__ == "__main__":
    main()
