"""``python -m fedticket.simulations.edge``: the app on a loopback federation (federation.py)."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from fedticket.config import parse_run_config_string
from fedticket.simulations.edge.federation import LoopbackFederation


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run fedticket on a SuperLink and N SuperNodes on this machine (gRPC, TLS, "
        "SuperNode authentication).",
    )
    parser.add_argument("--nodes", type=int, default=3, help="number of SuperNodes")
    parser.add_argument("--run-config", default="", help="'key=value ...' as for flwr run")
    parser.add_argument(
        "--device-classes", default="", help="comma-separated device class per node (pi4,pi5,...)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keeps certificates and logs")
    parser.add_argument(
        "--insecure", action="store_true", help="plain text, no node authentication (warns)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fedticket-edge-"))
    classes = [c or None for c in args.device_classes.split(",")] if args.device_classes else []
    with LoopbackFederation(
        workdir, args.nodes, secure=not args.insecure, device_classes=classes
    ) as federation:
        result = federation.run(
            parse_run_config_string(args.run_config), timeout=args.timeout, echo=True
        )
    print(
        f"edge: exit {result.returncode} after {result.seconds:.1f} s; results: {result.run_dir}; "
        f"logs and certificates: {workdir}"
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
