"""Run the app under ``flwr run`` from Python, isolated and cleaned up.

``flwr run`` starts a detached local SuperLink that outlives the run and reuses
``$FLWR_HOME``; this launcher gives each launch its own ``FLWR_HOME``, Ray temp dir and free
HTTP port, turns off Flower's run-time dependency installation (it would pull a CUDA torch),
and stops the SuperLink it started, by PID, also when the run fails. Tests, benchmarks and
comparison scripts use it; users type ``flwr run .``.

Usage::

    python -m fedticket.simulations.launcher --run-config 'num-rounds=2' --num-supernodes 3
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedticket.simulations.app_project import SOURCE_TREE, app_project_dir
from fedticket.simulations.processes import find_pids, free_port, stop_pids, stream_command

PROJECT_DIR = SOURCE_TREE  # presets and benchmarks are read from it
RESULTS_LINE = re.compile(r"fedticket: results in (\S+)")
#: ``simulations.server_app.FAILED_LINE``: Flower 1.39 exits 0 however the ServerApp ended
FAILED_LINE = re.compile(r"fedticket: run failed: (.*)")


@dataclass(frozen=True)
class LaunchResult:
    """``returncode`` is ``flwr run``'s, made non-zero when the ServerApp said the run failed
    or never named a results directory (``failure`` says why)."""

    returncode: int
    output: str
    run_dir: Path | None
    seconds: float
    failure: str = ""

    @classmethod
    def from_output(cls, returncode: int, output: str, seconds: float) -> LaunchResult:
        failed = FAILED_LINE.findall(output)
        run_dir = results_dir(output)
        failure = failed[-1].strip() if failed else ""
        if not failure and run_dir is None:
            failure = "the ServerApp named no results directory (see the output)"
        if returncode == 0 and failure:
            returncode = 1
        return cls(returncode, output, run_dir, seconds, failure)


def toml_value(value: Any) -> str:
    """One run-config value that Flower's ``--run-config`` parser reads back unchanged.

    Flower finds a quoted value with ``"[^"]*"`` or ``'[^']*'`` (up to the next quote of its
    kind, so no escaped quotes) and hands it to TOML: a basic string with TOML escapes, or a
    literal string (no escapes at all) for text with a double quote. ``json.dumps`` is not
    TOML: it writes characters outside the BMP as surrogate pairs, which TOML rejects."""
    import numbers
    import unicodedata

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        if not -(2**63) <= int(value) < 2**63:
            raise ValueError(f"run-config value {value}: Flower carries only 64-bit integers")
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))  # nan, inf and -inf are TOML floats too
    text = str(value)
    if any(unicodedata.category(c) == "Cs" for c in text):
        raise ValueError(f"run-config value {text[:60]!r}: lone surrogates are not text")
    controls = {c for c in text if unicodedata.category(c) == "Cc"}  # C0, DEL and C1
    if '"' not in text:
        short = {"\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
        escapes = {c: short.get(c, f"\\u{ord(c):04X}") for c in controls | {"\\"}}
        return '"' + "".join(escapes.get(c, c) for c in text) + '"'
    if "'" in text or controls - {"\t"}:  # a literal string has no escapes; it takes a tab
        raise ValueError(
            f"run-config value {text[:60]!r}: has a double quote and a single quote or a "
            "control character, which Flower's --run-config parser cannot read back"
        )
    return f"'{text}'"


def run_config_string(values: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={toml_value(value)}" for key, value in values.items())


def _superlink_pids(port: int) -> list[int]:
    """PIDs of local SuperLinks serving ``port`` (found in /proc: Flower detaches them)."""
    return find_pids(arg_containing="flower-superlink", arg=str(port))


def processes_of(workdir: Path) -> list[int]:
    """PIDs of every process started for the launch in ``workdir`` (SuperLink, SuperExec, the
    simulation, Ray's workers): they all carry its ``FLWR_HOME`` in their environment."""
    return find_pids(env=f"FLWR_HOME={Path(workdir) / 'flwr-home'}")


def isolated_env(
    workdir: Path, ray_dir: Path, port: int, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for one launch. ``ray_dir`` must be short: Ray puts AF_UNIX sockets
    (at most 107 bytes of path) under it."""
    env = dict(os.environ if base is None else base)
    env |= {
        "FLWR_HOME": str(workdir / "flwr-home"),
        "RAY_TMPDIR": str(ray_dir),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    }
    return env


def launch(
    run_config: Mapping[str, Any],
    *,
    num_supernodes: int = 2,
    cpus_per_client: int = 2,
    timeout: float = 900.0,
    project_dir: Path | None = None,
    workdir: Path | None = None,
    echo: bool = False,
    on_line: Callable[[str], None] | None = None,
    gpus_per_client: float = 0.0,
    extra_env: Mapping[str, str] | None = None,
) -> LaunchResult:
    """``flwr run <project_dir> --stream`` with the given run config, then stop its SuperLink.

    ``project_dir`` defaults to the source tree, or from an installed wheel to an app directory
    written into ``workdir`` (``simulations.app_project``).

    ``gpus_per_client`` is Flower's ``client-resources-num-gpus`` (a fraction shares a GPU);
    ``extra_env`` reaches the SuperLink and the simulation (``RAY_ADDRESS`` joins a running
    Ray cluster, see ``simulations.ray_cluster``)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="fedticket-launch-"))
    project_dir = project_dir or app_project_dir(workdir)
    port = free_port()
    ray_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    env = isolated_env(workdir, ray_dir, port) | dict(extra_env or {})
    cmd = [
        "flwr",
        "run",
        str(project_dir),
        "--stream",
        "--federation-config",
        f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus_per_client}"
        + (f" client-resources-num-gpus={gpus_per_client}" if gpus_per_client else ""),
    ]
    if run_config:
        cmd += ["--run-config", run_config_string(run_config)]
    try:
        returncode, output, seconds = stream_command(cmd, project_dir, env, timeout, echo, on_line)
    finally:
        stop_pids(_superlink_pids(port), grace=10.0)
        shutil.rmtree(ray_dir, ignore_errors=True)
    return LaunchResult.from_output(returncode, output, seconds)


def results_dir(output: str) -> Path | None:
    """The run directory the ServerApp printed last (None if it printed none)."""
    found = RESULTS_LINE.findall(output)
    return Path(found[-1]) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-config", default="", help="'key=value ...' as for flwr run")
    parser.add_argument("--num-supernodes", type=int, default=2)
    parser.add_argument("--cpus-per-client", type=int, default=2)
    parser.add_argument(
        "--gpus-per-client", type=float, default=0.0, help="a fraction shares one GPU"
    )
    args = parser.parse_args(argv)
    from fedticket.config import parse_run_config_string

    result = launch(
        parse_run_config_string(args.run_config),
        num_supernodes=args.num_supernodes,
        cpus_per_client=args.cpus_per_client,
        gpus_per_client=args.gpus_per_client,
        echo=True,
    )
    print(
        f"launcher: exit {result.returncode} after {result.seconds:.1f} s; "
        f"results: {result.run_dir}" + (f"; failed: {result.failure}" if result.failure else "")
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
