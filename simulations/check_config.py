"""Check a run config before launching: ``flwr run`` itself rejects an unknown key only with
"[code: 15] Invalid run configuration." and says which key just in the SuperLink's log.

``--run-config`` is parsed by Flower's own parser, so this reads exactly what ``flwr run``
would; what Flower silently ignores (``lr = 0.1`` with spaces) is shown as a warning. Every
failure is one line, ``invalid: ...``, and exit status 2.

Usage::

    python -m fedticket.simulations.check_config --run-config 'lr=0.1 algoritm="fedavg"'
    python -m fedticket.simulations.check_config simulations/presets/some-preset.toml
    python -m fedticket.simulations.check_config --list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fedticket.config import (
    ConfigError,
    RunConfig,
    describe_keys,
    ignored_run_config_text,
    parse_run_config_args,
)


def _algorithms() -> list[str]:
    from fedticket.clients import CLIENTS
    from fedticket.strategies import STRATEGIES

    return sorted(set(STRATEGIES) & set(CLIENTS))


def read_preset(path: str) -> dict[str, Any]:
    """A TOML file of run-config keys, read as ``flwr run --run-config FILE`` reads it."""
    import tomli
    from flwr.common.config import flatten_dict

    try:
        return flatten_dict(tomli.loads(Path(path).expanduser().read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"preset {path!r}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:  # not UTF-8, not TOML, or a value Flower does not take
        raise ConfigError(f"preset {path!r}: {' '.join(str(exc).split())}") from None


def given_run_config(preset: str | None, run_config: list[str]) -> dict[str, Any]:
    """The keys a preset file and ``--run-config`` texts give, read as ``flwr run`` reads them
    (later texts win); what Flower would silently ignore is printed as a warning."""
    for text in run_config:
        for ignored in ignored_run_config_text(text):
            print(
                f"warning: flwr run ignores {ignored!r} in --run-config (entries are key=value "
                "with no spaces around '=' and a value)",
                file=sys.stderr,
            )
    raw = read_preset(preset) if preset else {}
    return raw | parse_run_config_args(run_config)


def check_run_config(raw: dict[str, Any]) -> RunConfig:
    """``raw`` resolved and checked as the ServerApp would, the algorithm's own checks
    included; ``ConfigError`` names the first bad key."""
    from fedticket.strategies import STRATEGIES

    config = RunConfig.from_run_config(raw, algorithms=_algorithms())
    STRATEGIES[config.algorithm].check_config(config)
    return config


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Validate a fedticket run config.")
    parser.add_argument(
        "preset", nargs="?", help="a TOML file of run-config keys (as for --run-config FILE)"
    )
    parser.add_argument(
        "--run-config",
        action="append",
        default=[],
        help="'key=value ...' as passed to flwr run (repeatable, as there)",
    )
    parser.add_argument(
        "--list", action="store_true", help="print every key, its default and meaning"
    )
    args = parser.parse_args(argv)
    if args.list:
        for key, default, help_text in describe_keys():
            print(f"{key:24} {default!r:18} {help_text}")
        return 0
    try:
        config = check_run_config(given_run_config(args.preset, args.run_config))
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a checker must answer in one line, even about its own bugs
        detail = " ".join(str(exc).split())
        print(
            f"invalid: unexpected {type(exc).__name__}: {detail} (a bug: report it)",
            file=sys.stderr,
        )
        return 2
    print(f"ok: {config.algorithm} config {config.config_hash()}")
    from fedticket.learn.torch_device import DeviceError, resolve_device

    try:  # the clients may run elsewhere (a cluster, devices): a note, not a failure
        print(f"this machine would train on {resolve_device(config.device)}")
    except DeviceError as exc:
        print(f"note: on this machine {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
