"""Which Fleet API the installed Flower speaks, and how a SuperLink is told where to serve it.

Flower 1.39 is the last release whose SuperNode <-> SuperLink Fleet API is gRPC, on its own
``--fleet-api-address``; from 1.40 the Fleet API is HTTP, served with the Control and Runtime
APIs on the SuperLink's ``--host`` / ``--port`` (``--fleet-api-address`` is deprecated). The
Message API the app uses is the same through 1.42, so only the edge federation's ports and
this choice depend on the version. SuperNodes on devices must run the same Flower as the
SuperLink (the edge guide says which line to install).
"""

from __future__ import annotations

from importlib.metadata import version

#: the first Flower release whose Fleet API is HTTP
HTTP_FLEET_FROM = (1, 40)


def flower_version() -> tuple[int, int]:
    major, minor = version("flwr").split(".")[:2]
    return int(major), int(minor)


def fleet_over_http(installed: tuple[int, int] | None = None) -> bool:
    """True where the Fleet API shares the SuperLink's HTTP port (Flower 1.40 and later)."""
    return (installed or flower_version()) >= HTTP_FLEET_FROM


def superlink_fleet_args(fleet_port: int, installed: tuple[int, int] | None = None) -> list[str]:
    """The SuperLink's Fleet API arguments: its own gRPC address on 1.39, none on 1.40+."""
    if fleet_over_http(installed):
        return []
    return ["--fleet-api-address", f"127.0.0.1:{fleet_port}"]


def fleet_started_line(installed: tuple[int, int] | None = None) -> str:
    """What the SuperLink logs once its Fleet API listens (the tests read it)."""
    if fleet_over_http(installed):
        return "Starting the SuperLink Fleet HTTP API"
    return "Starting Fleet API (gRPC-rere)"
