"""Check a run config before launching: ``flwr run`` itself rejects an unknown key only with
"[code: 15] Invalid run configuration." and says which key just in the SuperLink's log.

Usage::

    python -m simulations.check_config --run-config 'lr=0.1 algoritm="fedavg"'
    python -m simulations.check_config simulations/presets/some-preset.toml
    python -m simulations.check_config --list
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from fedticket.config import ConfigError, RunConfig, describe_keys, parse_run_config_string


def _algorithms() -> list[str]:
    from clients import CLIENTS
    from strategies import STRATEGIES

    return sorted(set(STRATEGIES) & set(CLIENTS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate a fedticket run config.")
    parser.add_argument(
        "preset", nargs="?", help="a TOML file of run-config keys (as for --run-config FILE)"
    )
    parser.add_argument("--run-config", default="", help="'key=value ...' as passed to flwr run")
    parser.add_argument(
        "--list", action="store_true", help="print every key, its default and meaning"
    )
    args = parser.parse_args(argv)
    if args.list:
        for key, default, help_text in describe_keys():
            print(f"{key:24} {default!r:18} {help_text}")
        return 0
    try:
        raw = tomllib.loads(Path(args.preset).read_text()) if args.preset else {}
        raw |= parse_run_config_string(args.run_config)
        config = RunConfig.from_run_config(raw, algorithms=_algorithms())
    except (ConfigError, tomllib.TOMLDecodeError, OSError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {config.algorithm} config {config.config_hash()}")
    from fedticket.accelerator import DeviceError, resolve_device

    try:  # the clients may run elsewhere (a cluster, devices): a note, not a failure
        print(f"this machine would train on {resolve_device(config.device)}")
    except DeviceError as exc:
        print(f"note: on this machine {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
