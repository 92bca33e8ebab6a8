"""What ``fedticket run`` shows (issue #25), on a real capture of ``flwr run``'s output
(``tests/data/flwr_run_output.txt``, Flower 1.39, FLASH on 4 SuperNodes): the run's own lines
stay, Flower's notices that do not apply to a launched run go, colour only on a terminal."""

from __future__ import annotations

import io
from pathlib import Path

from fedticket.simulations.run_output import RunEcho, shown

CAPTURE = Path(__file__).with_name("data") / "flwr_run_output.txt"


def _shown(colour: bool = False) -> str:
    lines = CAPTURE.read_text().splitlines(keepends=True)
    return "".join(k for line in lines if (k := shown(line, colour)) is not None)


def test_the_run_stays_and_flowers_notices_go() -> None:
    raw, text = CAPTURE.read_text(), _shown()
    for gone in (
        "Flower configuration not found",
        "default simulated SuperNodes changed",
        "To change federation size",
        "flwr federation simulation-config",
        "Successfully installed fedticket",
        "Manually terminating ClientAppActor",
    ):
        assert gone in raw and gone not in text, gone
    for kept in ("FLASH stage 1", "round 1/2  served", "fedticket: results in", "x less"):
        assert kept in text, kept
    assert "\n\n" not in text and not text.startswith("\n")
    assert "\nround 1/2  served " in text and "INFO :" not in text
    assert "\x1b[" in raw and "\x1b[" not in text


def test_colour_stays_on_a_terminal_only() -> None:
    warning = "\x1b[93mWARNING \x1b[0m:   round 2 train: node 7 (partition 1) timeout\n"
    assert shown(warning, colour=True) == warning
    assert (
        shown(warning, colour=False) == "WARNING :   round 2 train: node 7 (partition 1) timeout\n"
    )
    stream = io.StringIO()  # not a terminal
    echo = RunEcho(stream)
    echo("\x1b[92mINFO \x1b[0m:      round 1/2  served 0.1\n")
    echo(
        "\x1b[93mWARNING \x1b[0m:   Since flwr 1.32, default simulated SuperNodes changed from 10\n"
    )
    assert stream.getvalue() == "round 1/2  served 0.1\n"
