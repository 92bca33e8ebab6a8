"""Many stateful clients on one machine: wall time and peak memory against the client count.

Runs LotteryFL through ``flwr run`` (simulation engine, 2 Ray actors of 1 CPU) with N clients
(the offline data split IID: 5,000 / N images each), 20 clients per round and 20 evaluated,
and samples the resident memory of every process of the run (SuperLink, simulation, Ray) every
0.2 s. Client state lives in Flower's context (``client-state="memory"``) or in one snapshot
file per client on disk (``"disk"``, what ``"auto"`` picks above 200 clients).

``--partitioner sampled`` gives every client the same number of images whatever N is (each
draws ``--samples-per-client`` of the pool: clients overlap), so that a row differs from the
first only in the registered count; the ``*_vs_first`` columns are ratios to the first row of
the same run.

Usage::

    python -m benchmarks.scale                          # 100, 300 and 1,000 clients, both modes
    python -m benchmarks.scale --clients 100 --modes disk --rounds 2
    python -m benchmarks.scale --clients 1000 10000 --per-round 100 --partitioner sampled \
        --modes disk                                    # issue #24: memory flat in N
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import RESULTS, write_table
from fedticket.simulations.launcher import LaunchResult, launch, processes_of


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_kind(pid: int) -> str:
    """Which part of a run a process is: simulation (ServerApp + engine), ray (actors, raylet,
    dashboard), superlink, or other (flwr run, SuperExec)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    for kind, marker in (
        ("simulation", "flwr-simulation"),
        ("superlink", "flower-superlink"),
        ("ray", "ray"),
    ):
        if marker in command:
            return kind
    return "other"


class PeakMemory(threading.Thread):
    """Largest sum of RSS over the processes of one launch (its ``workdir``), and each kind's
    RSS at that moment (``at_peak``)."""

    def __init__(self, workdir: Path, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.workdir, self.every, self.peak = workdir, every, 0
        self.at_peak: dict[str, int] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            by_kind: dict[str, int] = {}
            for pid in processes_of(self.workdir):
                kind = process_kind(pid)
                by_kind[kind] = by_kind.get(kind, 0) + rss_bytes(pid)
            if sum(by_kind.values()) > self.peak:
                self.peak, self.at_peak = sum(by_kind.values()), by_kind
            time.sleep(self.every)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def launch_measuring_memory(
    config: dict, clients: int, workdir: Path, label: str
) -> tuple[LaunchResult, PeakMemory]:
    """One ``flwr run`` of ``clients`` simulated clients (1 CPU each) and the peak RSS summed
    over all its processes, in bytes; stops the benchmark if the run fails."""
    monitor = PeakMemory(workdir)
    monitor.start()
    result = launch(
        config, num_supernodes=clients, cpus_per_client=1, workdir=workdir, timeout=3600
    )
    monitor.stop()
    if result.returncode != 0 or result.run_dir is None:
        raise SystemExit(f"{label} failed:\n{result.output[-3000:]}")
    return result, monitor


def one_run(clients: int, mode: str, args: argparse.Namespace, work: Path) -> dict:
    rounds, out, per_round = args.rounds, args.out, args.per_round
    config = {
        "algorithm": "lotteryfl",
        "partitioner": args.partitioner,
        "samples-per-client": args.samples_per_client,
        "num-rounds": rounds,
        "fraction-train": 0.0,
        "min-train-clients": per_round,
        "fraction-evaluate": 1e-9,  # 0 would switch evaluation off; the minimum decides
        "min-evaluate-clients": per_round,
        "min-available-clients": clients,
        "acc-threshold": -1.0,
        "client-state": mode,
        "output-root": str(out / "runs" / f"scale-{mode}"),
        "resume": False,
    }
    workdir = work / f"{clients}-{mode}"
    result, memory = launch_measuring_memory(
        config, clients, workdir, f"{clients} clients ({mode})"
    )
    rounds_table = pd.read_parquet(result.run_dir / "rounds.parquet")
    return {
        "clients": clients,
        "per_round": per_round,
        "partitioner": args.partitioner,
        "client_state": mode,
        "rounds": len(rounds_table),
        "wall_s": result.seconds,
        "round_s": rounds_table["seconds"].mean(),
        "later_round_s": rounds_table["seconds"].iloc[1:].mean(),
        "peak_rss_MB": memory.peak / 1e6,
        **{
            f"{kind}_rss_MB": memory.at_peak.get(kind, 0) / 1e6
            for kind in ("simulation", "ray", "superlink", "other")
        },
        # the ServerApp's time before round 1: the roster's handshake with every node
        "before_round_1_s": rounds_table["finished_s"].iloc[0] - rounds_table["seconds"].iloc[0],
        "final_accuracy": rounds_table["served_accuracy"].dropna().iloc[-1],
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[100, 300, 1000])
    parser.add_argument("--modes", nargs="*", default=["memory", "disk"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=20, help="clients trained per round")
    parser.add_argument("--partitioner", default="iid", choices=["iid", "sampled"])
    parser.add_argument("--samples-per-client", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = Path("/tmp") / f"fedticket-scale-{int(time.time())}"
    rows = []
    for clients in args.clients:
        for mode in args.modes:
            rows.append(one_run(clients, mode, args, work))
            print(
                f"{clients} clients, {mode}: {rows[-1]['wall_s']:.0f} s, "
                f"peak {rows[-1]['peak_rss_MB']:.0f} MB",
                flush=True,
            )
    table = pd.DataFrame(rows)
    for column in ("peak_rss_MB", "later_round_s"):
        table[f"{column}_vs_first"] = table[column] / table[column].iloc[0]
    name = "scale_lotteryfl"
    if (args.per_round, args.partitioner) != (20, "iid"):
        name += f"_{args.per_round}perround_{args.partitioner}"
    write_table(table, args.out, name)
    return table


if __name__ == "__main__":
    main()
