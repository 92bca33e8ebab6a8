"""Reading ``flwr run``'s ``--run-config`` strings exactly as Flower does, with a one-line
diagnosis of what Flower refused (its own message names no entry)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from fedticket.config.fields import ConfigError, shown

# The regex ``flwr.common.config.parse_config_args`` (Flower 1.39) reads each ``--run-config``
# string with; text it does not match is dropped without a word (see ignored_run_config_text).
FLOWER_PAIR = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")


def parse_run_config_string(text: str) -> dict[str, Any]:
    """Parse one ``--run-config 'k=v k2=v2'`` string exactly as ``flwr run`` does."""
    return parse_run_config_args([text])


def parse_run_config_args(args: Sequence[str]) -> dict[str, Any]:
    """Parse ``flwr run``'s (repeatable) ``--run-config`` values with Flower's own parser: a
    string Flower accepts gives the same dict; one it refuses raises a ConfigError naming the
    entry (Flower's own message names none). A single value ending in ``.toml`` is a file."""
    import click
    from flwr.common.config import parse_config_args

    try:
        return parse_config_args(list(args))
    except OSError as exc:  # the .toml file
        raise ConfigError(
            f"run-config file {shown(args[0])}: cannot read it ({exc.strerror or exc})"
        ) from None
    except (click.ClickException, ValueError) as exc:  # TOML errors are ValueErrors
        raise ConfigError(_diagnose(list(args), exc)) from None


def ignored_run_config_text(text: str) -> list[str]:
    """The parts of one ``--run-config`` string that ``flwr run`` silently ignores: whatever
    FLOWER_PAIR does not match (``lr = 0.1`` with spaces, ``lr=`` without a value)."""
    if text.endswith(".toml"):
        return []
    gaps, end = [], 0
    for match in FLOWER_PAIR.finditer(text):
        gaps.append(text[end : match.start()])
        end = match.end()
    gaps.append(text[end:])
    return [gap.strip() for gap in gaps if gap.strip()]


def _diagnose(args: list[str], error: Exception) -> str:
    """One line naming what Flower refused, found by reading the entries one at a time."""
    import tomli  # Flower's TOML parser, so both read the same

    if len(args) == 1 and args[0].endswith(".toml"):
        detail = " ".join(str(error).split())
        return f"run-config file {shown(args[0])}: {detail}"
    if any(arg.endswith(".toml") for arg in args):
        return "run-config: a .toml file cannot be given together with key=value strings"
    for text in args:
        seen: dict[tuple[str, ...], str] = {}
        lines: list[str] = []
        for key, value in FLOWER_PAIR.findall(text):
            entry = f"{key}={value}"
            try:
                tomli.loads(f"{key} = 0")
            except tomli.TOMLDecodeError:
                return (
                    f"run-config entry {shown(entry)}: {shown(key)} is not a valid key "
                    "(letters, digits, '-' and '_')"
                )
            try:
                leaves = _leaves(tomli.loads(f"{key} = {value}"))
            except tomli.TOMLDecodeError:
                return _bad_value_message(key, value)
            for path, leaf in leaves:
                name = ".".join(path)  # Flower's flatten_dict joins a table's keys with dots
                if path in seen:
                    return (
                        f"run-config key '{name}' is given twice ({shown(seen[path])}, then "
                        f"{shown(entry)}); keep one"
                    )
                seen[path] = entry
                if not isinstance(leaf, bool | int | float | str):
                    return (
                        f"run-config key '{name}': Flower takes only bool, int, float and "
                        f"string values, got {type(leaf).__name__} {shown(value)}"
                    )
            lines.append(f"{key} = {value}")
            try:
                tomli.loads("\n".join(lines))
            except tomli.TOMLDecodeError:
                return (
                    f"run-config entry {shown(entry)}: conflicts with an earlier key (a table "
                    "and a value of one name); keep one"
                )
    detail = " ".join(str(error).split())
    return f"run-config: Flower cannot parse {shown(args)}: {detail}"


def _leaves(
    table: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every leaf of a parsed TOML table."""
    leaves = []
    for name, value in table.items():
        path = (*prefix, name)
        leaves += _leaves(value, path) if isinstance(value, dict) else [(path, value)]
    return leaves


def _bad_value_message(key: str, value: str) -> str:
    if value.startswith(("'", '"')):
        return (
            f"run-config key {shown(key)}: {shown(value)} is not a valid TOML string (a "
            "quote left open, a control character or a bad \\ escape?); Flower reads a quoted "
            "value up to the next quote of the same kind"
        )
    text = value if value.isprintable() else shown(value)
    return f'run-config key {shown(key)}: value {text} is not TOML; quote strings: {key}="{text}"'
