"""Flower 1.39 through 1.42 (issue #25): the edge federation serves the Fleet API on its own
gRPC address on 1.39 and on the SuperLink's HTTP port from 1.40, chosen by the installed
version; the app's Message API is the same, so nothing else depends on it."""

from __future__ import annotations

import re

from fedticket.simulations.edge.federation import LoopbackFederation
from fedticket.simulations.edge.flower_fleet import (
    fleet_over_http,
    fleet_started_line,
    flower_version,
    superlink_fleet_args,
)


def test_the_fleet_transport_follows_the_version() -> None:
    assert not fleet_over_http((1, 39)) and fleet_over_http((1, 40)) and fleet_over_http((1, 42))
    assert superlink_fleet_args(9092, (1, 39)) == ["--fleet-api-address", "127.0.0.1:9092"]
    assert superlink_fleet_args(9092, (1, 42)) == []
    assert "gRPC-rere" in fleet_started_line((1, 39))
    assert "Fleet HTTP API" in fleet_started_line((1, 41))


def test_the_federation_uses_the_installed_flowers_ports(tmp_path) -> None:
    installed = flower_version()
    assert (1, 39) <= installed < (1, 43), installed  # the versions pyproject.toml allows
    federation = LoopbackFederation(tmp_path, 2, secure=False)
    shared = federation.fleet_port == federation.control_port
    assert shared == fleet_over_http()
    assert re.fullmatch(r"127\.0\.0\.1:\d+", federation.fleet_address)
