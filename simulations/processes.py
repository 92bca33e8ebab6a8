"""Start, watch and stop child processes, and find free ports.

The launcher (``flwr run`` and the SuperLink it detaches), the loopback federation (SuperLink
and SuperNodes) and the local Ray cluster all start long-lived processes that start processes
of their own, and must leave none behind, also when a run fails. This module is that plumbing,
once: servers are started in their own process group so the whole tree can be stopped
(SIGTERM, a grace period, then SIGKILL), and processes that left the tree (Flower detaches its
SuperLink) are found by their command line or environment in ``/proc``. Linux only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

POLL = 0.2  # seconds between checks while waiting on a process or a port


class StartupError(RuntimeError):
    """A process exited, or did not open its port in time, while it was being started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now. Another process may take it before
    ours binds it; the window is short, and Flower's fixed defaults collide far more often."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``. With ``process``
    (the server being started), fail as soon as it exits instead of waiting out ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StartupError(
                f"{_name(process)} (pid {process.pid}) exited with code {process.returncode} "
                f"before port {port} opened"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(POLL)
    raise StartupError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def spawn_logged(
    cmd: Sequence[str],
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``cmd`` in a new session (so its own process group) with stdout and stderr
    appended to ``log_path``. The group is what ``stop_group`` signals: a SuperNode starts a
    SuperExec and a ClientApp per message, ``ray start`` a raylet and workers, and stopping
    only the parent would orphan them. A new session also keeps a Ctrl-C in the terminal from
    reaching every child at once, so the caller decides the order they stop in."""
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stream_command(
    cmd: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    echo: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> tuple[int, str, float]:
    """Run ``cmd``, collecting (and optionally echoing, or passing to ``on_line``) its output;
    killed after ``timeout`` seconds. Returns (exit code, output, seconds)."""
    started = time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                if echo:
                    print(line, end="", flush=True)
                if on_line is not None:
                    on_line(line)
            returncode = proc.wait()
        finally:
            watchdog.cancel()
    seconds = time.perf_counter() - started
    if seconds >= timeout:
        lines.append(f"launcher: killed after {timeout:.0f} s\n")
    return returncode, "".join(lines), seconds


def alive(pid: int) -> bool:
    """Whether ``pid`` runs and is ours to signal. A zombie counts as gone: it answers
    ``kill(pid, 0)`` until its parent reaps it, which for a detached process may be never."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    state = _stat(pid)
    return state is not None and state[0] != "Z"


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies do not count, see ``alive``)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for pid in _pids():
        state = _stat(pid)
        if state is not None and int(state[2]) == pgid and state[0] != "Z":
            return True
    return False


def stop_group(process: subprocess.Popen | None, grace: float = 8.0) -> None:
    """Stop a process started by ``spawn_logged`` and everything in its group: SIGTERM, up to
    ``grace`` seconds to exit, then SIGKILL (and up to ``grace`` more). Also when the leader has
    already exited: its children may not have. Reaps the leader."""
    if process is None or (process.poll() is not None and not group_alive(process.pid)):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_alive(process.pid):
            if process.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=POLL)
            else:
                time.sleep(POLL)  # the leader is reaped, its children are not gone yet
        if not group_alive(process.pid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=1)


def kill_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL a process group at once, no grace (a device that vanishes without a goodbye),
    then reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)


def stop_pids(pids: Iterable[int], grace: float = 10.0) -> None:
    """Stop processes that are not our children (so not reapable, not in a group of ours):
    SIGTERM to all, up to ``grace`` seconds in total for them to exit, then SIGKILL."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(POLL)
    kill_pids(pid for pid in pids if alive(pid))


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL each of ``pids`` that still exists: a power cut, nothing gets to clean up."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def find_pids(
    *, arg_containing: str | None = None, arg: str | None = None, env: str | None = None
) -> list[int]:
    """PIDs of other processes (never this one) with a command-line argument that contains
    ``arg_containing``, an argument equal to ``arg`` and an environment entry equal to ``env``
    (``"NAME=value"``), each checked only when given. For processes that left our tree:
    Flower detaches its local SuperLink, Ray daemonizes its GCS and raylets."""
    found = []
    for pid in _pids():
        try:
            args = _read_list(pid, "cmdline") if (arg_containing, arg) != (None, None) else []
            environ = _read_list(pid, "environ") if env is not None else []
        except OSError:  # gone, or another user's
            continue
        if arg_containing is not None and not any(arg_containing.encode() in a for a in args):
            continue
        if arg is not None and arg.encode() not in args:
            continue
        if env is not None and env.encode() not in environ:
            continue
        found.append(pid)
    return found


def _pids() -> list[int]:
    own = os.getpid()
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and int(e.name) != own]


def _read_list(pid: int, name: str) -> list[bytes]:
    return Path(f"/proc/{pid}/{name}").read_bytes().split(b"\0")


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _name(process: subprocess.Popen) -> str:
    args = process.args
    first = args[0] if isinstance(args, list | tuple) and args else args
    return Path(os.fsdecode(first)).name
