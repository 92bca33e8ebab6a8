"""The ``fedticket`` command: run, check, compare, report, runs, edge.

Built on Typer (which Flower's own ``flwr`` command uses, so it costs no new dependency).
``fedticket run`` is the isolated way to run the app: its own SuperLink on free ports and its
own ``FLWR_HOME`` (``simulations.launcher``), stopped by PID when the run ends, so two users or
two runs on one host never attach to each other's SuperLink. The other commands hand their
arguments to the ``python -m`` entry point of the same name, which keeps working and holds the
one definition of its options (``fedticket check --help`` prints them).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="fedticket",
    help="Lottery tickets in federated learning on Flower: run, check, compare and report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command(short_help="Run a config on the simulation engine, isolated (own SuperLink).")
def run(
    preset: Annotated[
        Path | None, typer.Argument(help="a TOML file of run-config keys (as for check)")
    ] = None,
    run_config: Annotated[
        list[str] | None,
        typer.Option("--run-config", "-c", help="'key=value ...' as for flwr run; repeatable"),
    ] = None,
    supernodes: Annotated[int, typer.Option(help="simulated clients (SuperNodes)")] = 2,
    cpus_per_client: Annotated[int, typer.Option(help="CPUs Ray gives each client")] = 2,
    gpus_per_client: Annotated[float, typer.Option(help="a fraction shares one GPU")] = 0.0,
    timeout: Annotated[float, typer.Option(help="seconds before the run is stopped")] = 86400.0,
) -> None:
    """Check the config, then run it on the simulation engine, isolated: its own SuperLink on
    free ports, stopped when the run ends. Prints each round and where the results are.

    PRESET is a TOML file of run-config keys; --run-config keys override it."""
    from fedticket.config import ConfigError
    from fedticket.simulations.check_config import check_run_config, given_run_config
    from fedticket.simulations.launcher import launch
    from fedticket.simulations.run_output import RunEcho

    try:
        given = given_run_config(str(preset) if preset else None, run_config or [])
        check_run_config(given)
    except (ConfigError, OSError, ValueError) as exc:  # a bad key, or an unreadable preset
        typer.echo(f"invalid: {exc}", err=True)
        raise typer.Exit(2) from None
    result = launch(
        given,
        num_supernodes=supernodes,
        cpus_per_client=cpus_per_client,
        gpus_per_client=gpus_per_client,
        timeout=timeout,
        on_line=RunEcho(),
    )
    if result.returncode != 0:
        typer.echo(f"fedticket run: failed: {result.failure or 'see the output above'}", err=True)
    raise typer.Exit(result.returncode)


@dataclass(frozen=True)
class Forwarded:
    """A command whose options belong to the ``python -m`` module it hands its arguments to:
    that module's ``main(argv, prog)`` is the one definition of them."""

    module: str
    short_help: str
    help: str


FORWARDED_COMMANDS = {
    "check": Forwarded(
        "fedticket.simulations.check_config",
        "Validate a run config; --list prints every key.",
        "Validate a run config (a preset file, --run-config) before running; --list: every key.",
    ),
    "compare": Forwarded(
        "fedticket.simulations.compare",
        "Run a comparison preset over its seeds: table and figures.",
        "Run a comparison preset over its seeds (finished runs are reused); table and figures.",
    ),
    "report": Forwarded(
        "fedticket.analysis.report",
        "Summarise one run directory on one screen.",
        "One screen on a run directory: accuracy under every protocol, bytes, failures.",
    ),
    "runs": Forwarded(
        "fedticket.analysis.runs_index",
        "List the runs under an output root, newest first.",
        "Every run directory: algorithm, hash, status, rounds, accuracy, what it changes.",
    ),
    "edge": Forwarded(
        "fedticket.simulations.edge.__main__",
        "Run on a loopback SuperLink and SuperNodes (gRPC, TLS).",
        "Run the app on a SuperLink and N SuperNodes on this machine (gRPC, TLS, node keys).",
    ),
}


def _add_forwarded(name: str, command: Forwarded) -> None:
    def forward(ctx: typer.Context) -> None:
        main = importlib.import_module(command.module).main  # imported only when chosen
        raise typer.Exit(main(ctx.args, prog=f"fedticket {name}"))

    app.command(
        name,
        short_help=command.short_help,
        help=command.help,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,  # --help goes to the module, which prints its options
    )(forward)


for _name, _command in FORWARDED_COMMANDS.items():
    _add_forwarded(_name, _command)


def main(argv: list[str] | None = None) -> int:
    """The console script; ``argv`` for tests. Returns the exit status."""
    try:
        app(args=argv, prog_name="fedticket", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
