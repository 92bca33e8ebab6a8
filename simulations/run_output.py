"""What ``fedticket run`` shows of ``flwr run``'s output: the run, not Flower's chatter.

Dropped from the screen (the launcher's ``output`` keeps every line): notices that do not
apply to a launched run (the default-SuperNodes warning and its "to change federation size"
hint: ``--supernodes`` sets it; the default Flower configuration the isolated ``FLWR_HOME``
gets; the app bundle's install path), the actors' "Manually terminating ClientAppActor" at
shutdown, and empty lines (Flower's closing log line is one); Flower's ``INFO :`` prefix is
cut. Colour codes are removed unless the output is a terminal.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Flower's "INFO :      " before each line it logs (warnings and errors keep their level)
INFO_PREFIX = re.compile(r"^(\x1b\[[0-9;]*m)?INFO (\x1b\[[0-9;]*m)?:\s+")
NOISE = re.compile(
    "|".join(
        (
            r"^Flower configuration not found\. Created default configuration",
            r"default simulated SuperNodes changed from",
            r"To change federation size, use the following command",
            r"flwr federation simulation-config",
            r"^Successfully installed \S+ to ",
            r"Manually terminating ClientAppActor",
            r"^INFO :$",
        )
    )
)


def shown(line: str, colour: bool) -> str | None:
    """``line`` as shown (``None``: not shown); ``colour``: keep the colour codes."""
    plain = ANSI.sub("", line)
    text = plain.strip()
    if not text or NOISE.search(text):
        return None
    return INFO_PREFIX.sub("", line if colour else plain)


class RunEcho:
    """An ``on_line`` for ``simulations.launcher.launch`` that prints what ``shown`` keeps."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.colour = self.stream.isatty()

    def __call__(self, line: str) -> None:
        kept = shown(line, self.colour)
        if kept is not None:
            self.stream.write(kept)
            self.stream.flush()
