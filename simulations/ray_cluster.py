"""A multi-node Ray cluster on this machine: Flower's simulation engine past one machine, tested.

Flower's simulation engine calls ``ray.init()``, which joins the cluster named by the
``RAY_ADDRESS`` environment variable when it is set, and sizes its actor pool from the CPUs
(and GPUs) of every node (``ray.nodes()``). So a simulation spreads over many hosts with no
code of ours: start Ray on each host, point ``flwr run``'s environment at the head node. This
module starts such a cluster with every node on one host, each node its own raylet with its own
CPU count, the way ``ray start`` builds one across hosts; the head gets no CPUs by default, so a
run can only finish if Ray placed its actors on the joined nodes.

Usage::

    python -m fedticket.simulations.ray_cluster --workers 2 2  # head, two 2-CPU nodes; Ctrl-C stops
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from fedticket.simulations.processes import (
    StartupError,
    find_pids,
    free_port,
    kill_pids,
    spawn_logged,
    stop_group,
    wait_for_port,
)

RAY = str(Path(sys.executable).with_name("ray"))
_NODES_PROBE = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
alive = [n for n in ray.nodes() if n["Alive"]]
print(json.dumps([{"cpus": n["Resources"].get("CPU", 0), "id": n["NodeID"]} for n in alive]))
"""


class RayClusterError(RuntimeError):
    """The local Ray cluster did not come up."""


class LocalRayCluster:
    """``ray start --head`` plus one ``ray start --address`` per worker node, all on 127.0.0.1;
    every process stopped on exit (by process group, then by its temp dir)."""

    def __init__(self, worker_cpus: list[int], head_cpus: int = 0, startup: float = 120.0):
        if not worker_cpus and head_cpus < 1:
            raise ValueError("a cluster needs CPUs: give the head CPUs or add worker nodes")
        self.worker_cpus, self.head_cpus, self.startup = worker_cpus, head_cpus, startup
        self.port = free_port()
        # short: Ray puts AF_UNIX sockets (at most 107 bytes of path) under it
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp"))
        self.processes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What ``flwr run`` (and the SuperLink it starts) needs to use this cluster."""
        return {"RAY_ADDRESS": self.address}

    def _start(self, args: list[str]) -> None:
        # a small object store: the default is 30 % of RAM per node
        command = [RAY, "start", "--block", "--disable-usage-stats", "--object-store-memory"]
        command += [str(100 * 1024 * 1024), *args]
        log = self.temp_dir / f"node-{len(self.processes)}.log"
        self.processes.append(spawn_logged(command, log))

    def __enter__(self) -> LocalRayCluster:
        try:
            self._start(
                [
                    "--head",
                    "--node-ip-address=127.0.0.1",
                    f"--port={self.port}",
                    f"--num-cpus={self.head_cpus}",
                    "--num-gpus=0",
                    f"--temp-dir={self.temp_dir}",
                    "--include-dashboard=false",
                ]
            )
            try:
                wait_for_port(self.port, self.startup, self.processes[0])
            except StartupError as exc:
                log = (self.temp_dir / "node-0.log").read_text()[-1500:]
                raise RayClusterError(f"the Ray head did not start ({exc}):\n{log}") from None
            for cpus in self.worker_cpus:
                self._start(
                    [
                        f"--address={self.address}",
                        "--node-ip-address=127.0.0.1",
                        f"--num-cpus={cpus}",
                        "--num-gpus=0",
                    ]
                )
            self.wait_for_nodes(1 + len(self.worker_cpus))
        except BaseException:
            self.stop()
            raise
        return self

    def alive_nodes(self) -> list[dict]:
        """Ray's view of the cluster (``ray.nodes()``, alive ones), asked from a fresh driver
        so that this process never joins the cluster."""
        done = subprocess.run(
            [sys.executable, "-c", _NODES_PROBE, self.address],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RayClusterError(f"ray.nodes() failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, count: int) -> list[dict]:
        deadline, nodes = time.monotonic() + self.startup, []
        while time.monotonic() < deadline:
            with contextlib.suppress(RayClusterError, subprocess.TimeoutExpired):
                nodes = self.alive_nodes()  # a node joining can make one probe fail
                if len(nodes) >= count:
                    return nodes
            time.sleep(1.0)
        logs = "\n".join(p.read_text()[-1500:] for p in sorted(self.temp_dir.glob("node-*.log")))
        raise RayClusterError(f"only {len(nodes)} of {count} Ray nodes joined:\n{logs}")

    def stop(self) -> None:
        for proc in reversed(self.processes):  # workers first, head last
            stop_group(proc)
        # what Ray daemonized out of those groups: raylets, GCS and workers name the dir
        kill_pids(find_pids(arg_containing=str(self.temp_dir)))
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="CPUs per node")
    parser.add_argument("--head-cpus", type=int, default=0)
    args = parser.parse_args(argv)
    # SIGTERM ends the wait like Ctrl-C, so the cluster is stopped on the way out
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with LocalRayCluster(args.workers, args.head_cpus) as cluster:
        print(f"Ray cluster at {cluster.address}: {cluster.alive_nodes()}")
        print(f"run:  RAY_ADDRESS={cluster.address} flwr run .   (Ctrl-C stops the cluster)")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
