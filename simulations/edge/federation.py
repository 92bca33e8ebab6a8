"""A real federation on this machine: one SuperLink and N SuperNodes on loopback (the Fleet API
is gRPC on Flower 1.39, HTTP on 1.40+: ``simulations.edge.flower_fleet``).

Secure by default, as a deployment should be: a CA and a SuperLink certificate are made for the
run, the SuperLink requires SuperNode authentication, and each SuperNode gets its own EC key pair,
registered at the SuperLink before it starts. ``secure=False`` runs plain text (``--insecure``)
and warns. Every process is started in its own session and stopped by its process group (SIGTERM,
then SIGKILL), also when something fails, so no SuperLink, SuperExec or ClientApp outlives the
federation. Ports are free ones found at start; each SuperNode gets
``--node-config "partition-id=K num-partitions=N device-class=..."``.

Usage::

    python -m fedticket.simulations.edge --nodes 3 --run-config 'num-rounds=2'
    python -m fedticket.simulations.edge --nodes 3 --device-classes pi4,pi5,jetson --insecure
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedticket.simulations.app_project import app_project_dir
from fedticket.simulations.edge.certs import (
    ServerCertificates,
    make_node_key,
    make_server_certificates,
)
from fedticket.simulations.edge.flower_fleet import fleet_over_http, superlink_fleet_args
from fedticket.simulations.edge.relay import ByteRelay
from fedticket.simulations.launcher import LaunchResult, run_config_string, toml_value
from fedticket.simulations.processes import (
    StartupError,
    free_port,
    kill_group,
    spawn_logged,
    stop_group,
    stream_command,
    wait_for_port,
)

log = logging.getLogger("fedticket.edge")
BIN = Path(sys.executable).parent
CONNECTION = "edge"


class FederationError(RuntimeError):
    """A process of the federation did not start or a step of the setup failed."""


@dataclass
class EdgeNode:
    partition_id: int
    device_class: str | None
    port: int
    log_path: Path
    key: Path | None = None
    public_key: Path | None = None
    process: subprocess.Popen | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LoopbackFederation:
    """SuperLink + SuperNodes on 127.0.0.1 (see the module docstring); a context manager that
    always stops what it started."""

    def __init__(
        self,
        workdir: Path,
        num_nodes: int,
        *,
        secure: bool = True,
        device_classes: Sequence[str | None] = (),
        relay: bool = False,
        node_configs: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        if num_nodes < 1:
            raise ValueError("a federation needs at least one SuperNode")
        self.workdir = Path(workdir).resolve()
        self.num_nodes = num_nodes
        self.secure = secure
        self.use_relay = relay
        self.control_port = free_port()
        # Flower 1.40+ serves the Fleet API on the same HTTP port (simulations.edge.flower_fleet)
        self.fleet_port = self.control_port if fleet_over_http() else free_port()
        self.env = self._environment()
        self.certs: ServerCertificates | None = None
        self.superlink: subprocess.Popen | None = None
        self.relay: ByteRelay | None = None
        classes = list(device_classes) + [None] * num_nodes
        self.nodes = [
            EdgeNode(
                pid,
                classes[pid],
                free_port(),
                self.workdir / f"supernode-{pid}.log",
                extra=dict((node_configs or {}).get(pid, {})),
            )
            for pid in range(num_nodes)
        ]

    # ------------------------------------------------------------------ setup
    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env |= {
            "FLWR_HOME": str(self.workdir / "flwr-home"),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the SuperLink spawns SuperExec
            # a SuperExec asks for a task every second by default: on loopback that is 0.5 s of
            # every message on average, for 20 local requests a second when idle
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.05",
        }
        return env

    @property
    def fleet_address(self) -> str:
        return self.relay.address if self.relay else f"127.0.0.1:{self.fleet_port}"

    def _spawn(self, cmd: list[str], log_path: Path, cwd: Path) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        return spawn_logged(cmd, log_path, cwd, self.env)

    def start(self) -> LoopbackFederation:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "flwr-home").mkdir(exist_ok=True)
        if self.secure:
            self.certs = make_server_certificates(self.workdir / "certs")
            for node in self.nodes:
                node.key, node.public_key = make_node_key(
                    self.workdir / "keys", f"node{node.partition_id}"
                )
        else:
            log.warning(
                "fedticket edge: running WITHOUT TLS and SuperNode authentication (--insecure); "
                "anyone who reaches the ports can join or read the traffic"
            )
        self._write_connection()
        self._start_superlink()
        if self.use_relay:
            self.relay = ByteRelay(("127.0.0.1", self.fleet_port)).start()
        for node in self.nodes:
            if self.secure:
                self.register(node.public_key, f"node{node.partition_id}")
            self.start_node(node)
        return self

    def _write_connection(self) -> None:
        lines = [f"[superlink.{CONNECTION}]", f'address = "127.0.0.1:{self.control_port}"']
        if self.certs:
            lines.append(f"root-certificates = {toml_value(str(self.certs.ca_cert))}")
        else:
            lines.append("insecure = true")
        (self.workdir / "flwr-home" / "config.toml").write_text("\n".join(lines) + "\n")

    def _start_superlink(self) -> None:
        cmd = [str(BIN / "flower-superlink")]
        if self.certs:
            cmd += [
                "--ssl-ca-certfile", str(self.certs.ca_cert),
                "--ssl-certfile", str(self.certs.server_cert),
                "--ssl-keyfile", str(self.certs.server_key),
                "--enable-supernode-auth",
            ]  # fmt: skip
        else:
            cmd.append("--insecure")
        cmd += [
            "--host", "127.0.0.1",
            "--port", str(self.control_port),
            *superlink_fleet_args(self.fleet_port),
            "--database", str(self.workdir / "superlink.db"),
        ]  # fmt: skip
        self.superlink = self._spawn(
            cmd, self.workdir / "superlink.log", self.workdir / "superlink"
        )
        try:
            wait_for_port(self.control_port, 60, self.superlink)
            wait_for_port(self.fleet_port, 60, self.superlink)
        except StartupError as exc:
            raise FederationError(
                f"SuperLink did not start ({exc}); see {self.workdir / 'superlink.log'}"
            ) from None

    def register(self, public_key: Path | None, name: str) -> None:
        """Register a SuperNode's public key at the SuperLink (Control API)."""
        result = subprocess.run(
            [
                str(BIN / "flwr"),
                "supernode",
                "register",
                str(public_key),
                CONNECTION,
                "--name",
                name,
            ],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise FederationError(
                f"registering {name} failed: {(result.stdout + result.stderr)[-500:]}"
            )

    def node_config(self, node: EdgeNode) -> str:
        values: dict[str, Any] = {
            "partition-id": node.partition_id,
            "num-partitions": self.num_nodes,
        }
        if node.device_class:
            values["device-class"] = node.device_class
        # each message's ClientApp process reads the node's data from here, not the data set
        values["data-cache"] = str(self.workdir / f"supernode-{node.partition_id}-data")
        values |= node.extra
        return run_config_string(values)

    def start_node(
        self,
        node: EdgeNode,
        *,
        key: Path | None = None,
        plaintext: bool = False,
        extra_args: Sequence[str] = (),
    ) -> subprocess.Popen:
        """Start (or restart) one SuperNode. ``key``/``plaintext`` override the secure
        defaults (tests use them to check that the SuperLink refuses such a node)."""
        cmd = [str(BIN / "flower-supernode"), "--superlink", self.fleet_address]
        if self.certs and not plaintext:
            cmd += ["--root-certificates", str(self.certs.ca_cert)]
            private = key or node.key
            if private is not None:
                cmd += ["--auth-supernode-private-key", str(private)]
        else:
            cmd.append("--insecure")
        cmd += ["--port", str(node.port), "--node-config", self.node_config(node), *extra_args]
        node.process = self._spawn(
            cmd, node.log_path, self.workdir / f"supernode-{node.partition_id}"
        )
        return node.process

    # ------------------------------------------------------------------ use
    def run(
        self, run_config: Mapping[str, Any], timeout: float = 600.0, echo: bool = False
    ) -> LaunchResult:
        """``flwr run <project> edge --stream`` against this federation's SuperLink."""
        project = app_project_dir(self.workdir)
        cmd = [str(BIN / "flwr"), "run", str(project), CONNECTION, "--stream"]
        if run_config:
            cmd += ["--run-config", run_config_string(run_config)]
        returncode, output, seconds = stream_command(cmd, project, self.env, timeout, echo)
        return LaunchResult.from_output(returncode, output, seconds)

    def kill_node(self, partition_id: int) -> None:
        """SIGKILL a SuperNode and its children: a device that vanishes without a goodbye."""
        node = self.nodes[partition_id]
        if node.process is not None:
            kill_group(node.process)

    def stop(self) -> None:
        for node in self.nodes:
            stop_group(node.process)
        stop_group(self.superlink)
        if self.relay:
            self.relay.close()

    def __enter__(self) -> LoopbackFederation:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
