"""simulations.processes with real child processes: a group is stopped with its children, a
process that ignores SIGTERM is killed after the grace, ports, and a server that dies first."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedticket.simulations.processes import (
    StartupError,
    alive,
    find_pids,
    free_port,
    kill_group,
    spawn_logged,
    stop_group,
    stop_pids,
    wait_for_port,
)

SLEEPER = "import time; time.sleep(60)"
DEAF = (  # ignores SIGTERM, says when it does
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('deaf', flush=True); time.sleep(60)"
)
PARENT = (  # a SuperNode in miniature: starts a child, names it, then waits (or exits)
    "import subprocess, sys, time; "
    f"child = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); "
    "print(child.pid, flush=True); time.sleep(60 if sys.argv[1] == 'stay' else 0)"
)


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def first_line(log: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if "\n" in text:
            return text.split("\n", 1)[0]
        time.sleep(0.02)
    raise AssertionError(f"{log} stayed empty for {timeout} s")


def test_stop_group_stops_the_process_and_its_child_within_the_grace(tmp_path) -> None:
    process = spawn_logged(python(PARENT, "stay"), tmp_path / "parent.log", tmp_path)
    child = int(first_line(tmp_path / "parent.log"))
    assert alive(child)
    started = time.monotonic()
    stop_group(process, grace=3.0)
    assert time.monotonic() - started < 3.0
    assert process.returncode == -signal.SIGTERM
    assert not alive(child)


def test_stop_group_reaches_children_of_a_leader_that_already_exited(tmp_path) -> None:
    process = spawn_logged(python(PARENT, "leave"), tmp_path / "parent.log")
    child = int(first_line(tmp_path / "parent.log"))
    process.wait(timeout=10)
    assert alive(child)
    stop_group(process, grace=3.0)
    assert not alive(child)


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path) -> None:
    process = spawn_logged(python(DEAF), tmp_path / "deaf.log")
    assert first_line(tmp_path / "deaf.log") == "deaf"
    started = time.monotonic()
    stop_group(process, grace=0.5)
    assert 0.5 <= time.monotonic() - started < 3.0
    assert process.returncode == -signal.SIGKILL


def test_stop_pids_terms_then_kills_what_is_not_in_a_group_of_ours(tmp_path) -> None:
    polite = subprocess.Popen(python(SLEEPER))
    deaf = subprocess.Popen(python(DEAF), stdout=subprocess.PIPE, text=True)
    assert deaf.stdout is not None and deaf.stdout.readline() == "deaf\n"
    started = time.monotonic()
    stop_pids([polite.pid, deaf.pid], grace=0.5)  # zombies until reaped: they count as gone
    assert 0.5 <= time.monotonic() - started < 3.0
    assert (polite.wait(timeout=5), deaf.wait(timeout=5)) == (-signal.SIGTERM, -signal.SIGKILL)
    deaf.stdout.close()


def test_kill_group_gives_no_grace(tmp_path) -> None:
    process = spawn_logged(python(DEAF), tmp_path / "deaf.log")
    assert first_line(tmp_path / "deaf.log") == "deaf"
    kill_group(process)
    assert process.returncode == -signal.SIGKILL


def test_spawn_logged_appends_so_a_restarted_node_keeps_its_history(tmp_path) -> None:
    log = tmp_path / "node.log"
    for word in ("first", "second"):
        speak = f"import sys; print({word!r}); print('err', file=sys.stderr)"
        spawn_logged(python(speak), log).wait(timeout=10)
    assert log.read_text().split() == ["first", "err", "second", "err"]


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)) as server:
        assert server.getsockname()[1] == port


def test_wait_for_port_returns_once_the_server_listens(tmp_path) -> None:
    port = free_port()
    serve = f"import socket, time; time.sleep(0.3); s = socket.create_server(('127.0.0.1', {port}))"
    process = spawn_logged(python(serve + "; time.sleep(60)"), tmp_path / "server.log")
    try:
        wait_for_port(port, timeout=10, process=process)
    finally:
        stop_group(process, grace=2.0)


def test_wait_for_port_names_the_exit_when_the_process_dies_first(tmp_path) -> None:
    process = spawn_logged(python("raise SystemExit(3)"), tmp_path / "dies.log")
    started = time.monotonic()
    with pytest.raises(StartupError, match=r"exited with code 3 before port \d+ opened"):
        wait_for_port(free_port(), timeout=30, process=process)
    assert time.monotonic() - started < 5.0


def test_wait_for_port_gives_up_after_the_timeout() -> None:
    with pytest.raises(StartupError, match=r"nothing listens on 127\.0\.0\.1:\d+ after 1 s"):
        wait_for_port(free_port(), timeout=1.0)


def test_find_pids_matches_arguments_and_environment_never_this_process(tmp_path) -> None:
    marker = str(tmp_path / "marker")
    env = {"PATH": "/usr/bin:/bin", "FEDTICKET_PROBE": marker}
    process = spawn_logged(python(SLEEPER, marker, "42"), tmp_path / "probe.log", env=env)
    try:
        deadline = time.monotonic() + 5
        while process.pid not in find_pids(arg=marker) and time.monotonic() < deadline:
            time.sleep(0.02)  # argv is in /proc once the interpreter has been exec'd
        assert find_pids(arg_containing="marker", arg="42") == [process.pid]
        assert find_pids(env=f"FEDTICKET_PROBE={marker}") == [process.pid]
        assert find_pids(arg_containing=marker, arg="43") == []
        assert os.getpid() not in find_pids(arg_containing="")  # "" is in every argument
    finally:
        stop_group(process, grace=2.0)
    assert not alive(process.pid)
