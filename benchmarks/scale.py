"""Many stateful clients on one machine: wall time and peak memory against the client count.

Runs LotteryFL through ``flwr run`` (simulation engine, 2 Ray actors of 1 CPU) with N clients
(the offline data split IID: 5,000 / N images each), 20 clients per round and 20 evaluated,
and samples the resident memory of every process of the run (SuperLink, simulation, Ray) every
0.2 s. Client state lives in Flower's context (``client-state="memory"``) or in one snapshot
file per client on disk (``"disk"``, what ``"auto"`` picks above 200 clients).

Usage::

    python -m benchmarks.scale                          # 100, 300 and 1,000 clients, both modes
    python -m benchmarks.scale --clients 100 --modes disk --rounds 2
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import RESULTS, write_table
from simulations.launcher import LaunchResult, launch, processes_of


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class PeakMemory(threading.Thread):
    """Largest sum of RSS over the processes of one launch (its ``workdir``)."""

    def __init__(self, workdir: Path, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.workdir, self.every, self.peak = workdir, every, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_bytes(processes_of(self.workdir)))
            time.sleep(self.every)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def launch_measuring_memory(
    config: dict, clients: int, workdir: Path, label: str
) -> tuple[LaunchResult, int]:
    """One ``flwr run`` of ``clients`` simulated clients (1 CPU each) and the peak RSS summed
    over all its processes, in bytes; stops the benchmark if the run fails."""
    monitor = PeakMemory(workdir)
    monitor.start()
    result = launch(
        config, num_supernodes=clients, cpus_per_client=1, workdir=workdir, timeout=3600
    )
    peak = monitor.stop()
    if result.returncode != 0 or result.run_dir is None:
        raise SystemExit(f"{label} failed:\n{result.output[-3000:]}")
    return result, peak


def one_run(clients: int, mode: str, rounds: int, out: Path, work: Path) -> dict:
    config = {
        "algorithm": "lotteryfl",
        "partitioner": "iid",
        "num-rounds": rounds,
        "fraction-train": 0.0,
        "min-train-clients": 20,
        "fraction-evaluate": 1e-9,  # 0 would switch evaluation off; the minimum decides
        "min-evaluate-clients": 20,
        "min-available-clients": clients,
        "acc-threshold": -1.0,
        "client-state": mode,
        "output-root": str(out / "runs" / f"scale-{mode}"),
        "resume": False,
    }
    workdir = work / f"{clients}-{mode}"
    result, peak = launch_measuring_memory(config, clients, workdir, f"{clients} clients ({mode})")
    rounds_table = pd.read_parquet(result.run_dir / "rounds.parquet")
    return {
        "clients": clients,
        "client_state": mode,
        "rounds": len(rounds_table),
        "wall_s": result.seconds,
        "round_s": rounds_table["seconds"].mean(),
        "peak_rss_MB": peak / 1e6,
        "final_accuracy": rounds_table["served_accuracy"].dropna().iloc[-1],
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[100, 300, 1000])
    parser.add_argument("--modes", nargs="*", default=["memory", "disk"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = Path("/tmp") / f"fedticket-scale-{int(time.time())}"
    rows = []
    for clients in args.clients:
        for mode in args.modes:
            rows.append(one_run(clients, mode, args.rounds, args.out, work))
            print(
                f"{clients} clients, {mode}: {rows[-1]['wall_s']:.0f} s, "
                f"peak {rows[-1]['peak_rss_MB']:.0f} MB",
                flush=True,
            )
    table = pd.DataFrame(rows)
    write_table(table, args.out, "scale_lotteryfl")
    return table


if __name__ == "__main__":
    main()
