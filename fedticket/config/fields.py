"""Declaring and checking run-config settings: the field helper every section uses, TOML
coercion, and the per-value checks (types, ranges, choices, text). Every error is one line
that names the key, what was wrong and the fix."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import field
from typing import Any

from fedticket.config.limits import INT64_MAX, INT64_MIN, NAME_MAX_BYTES, PATH_MAX_BYTES


class ConfigError(ValueError):
    """A run-config key or value that cannot be used; the message is one actionable line."""


def setting(
    default: Any,
    help: str,
    *,
    choices: Callable[[], Iterable[str]] | tuple[str, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_inf: bool = False,
    off: float | None = None,
    path: bool = False,
) -> Any:
    """A dataclass field carrying its help text and allowed range or choices.

    Floats must be finite unless ``allow_inf`` (NaN never passes). ``off`` is a value outside
    ``low``..``high`` that switches the feature off (a link speed of 0). ``path`` strings must
    be usable file-system paths."""
    meta = {
        "help": help,
        "choices": choices,
        "low": low,
        "high": high,
        "low_open": low_open,
        "allow_inf": allow_inf,
        "off": off,
        "path": path,
    }
    return field(default=default, metadata=meta)


def key_of(attribute: str) -> str:
    """The run-config key of a dataclass attribute: ``num_rounds`` -> ``num-rounds``."""
    return attribute.replace("_", "-")


def shown(value: Any, limit: int = 60) -> str:
    """``repr`` on one line, cut to ``limit`` characters (a message must stay readable)."""
    try:
        text = repr(value)
    except ValueError:  # an int of over 4,300 digits, alone or inside a list
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def unknown_key_message(key: str, specs: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(specs), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(specs))}"
    return f"unknown run-config key {shown(key)}: {hint}"


def coerce(key: str, value: Any, spec: dataclasses.Field) -> Any:
    """TOML gives int for ``lr=1`` and str only when quoted: coerce what is unambiguous."""
    kind = (
        spec.type
        if isinstance(spec.type, type)
        else {"int": int, "float": float, "str": str, "bool": bool}[spec.type]
    )
    example = f"{key}={json.dumps(spec.default)}"
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(
            f"run-config key '{key}': expected true or false, got {shown(value)} (fix: {example})"
        )
    if isinstance(value, int) and not isinstance(value, bool) and kind in (int, float):
        if not INT64_MIN <= value <= INT64_MAX:  # also keeps float() from overflowing
            raise ConfigError(
                f"run-config key '{key}': {shown(value)} is outside the 64-bit integers Flower "
                f"carries (fix: {example})"
            )
        return float(value) if kind is float else int(value)
    if kind is float and isinstance(value, float):
        return float(value) + 0.0  # -0.0 -> 0.0: the same computation gets the same hash
    if kind is int and isinstance(value, float) and value.is_integer():
        return coerce(key, int(value), spec)
    if kind is str and isinstance(value, str):
        return str(value)
    quoting = '; strings need quotes: key="value"' if kind is str else ""
    raise ConfigError(
        f"run-config key '{key}': expected {kind.__name__}, got {type(value).__name__} "
        f"{shown(value)} (fix: {example}{quoting})"
    )


def check_value(key: str, value: Any, spec: dataclasses.Field) -> None:
    meta = spec.metadata
    if isinstance(value, str):
        check_text(key, value, is_path=meta["path"])
    choices = meta["choices"]
    if choices is not None:
        allowed = list(choices() if callable(choices) else choices)
        if value not in allowed:
            raise ConfigError(choice_message(key, value, allowed))
    fix = f"(fix: --run-config '{key}={json.dumps(spec.default)}', the default)"
    if isinstance(value, float) and not (
        math.isfinite(value) or (meta["allow_inf"] and not math.isnan(value))
    ):
        raise ConfigError(f"run-config key '{key}': must be a finite number, got {value} {fix}")
    if meta["off"] is not None and value == meta["off"]:
        return
    low, high = meta["low"], meta["high"]
    if low is not None and (value <= low if meta["low_open"] else value < low):
        bound = f"> {low}" if meta["low_open"] else f">= {low}"
        if meta["off"] is not None:
            bound = f"{meta['off']:g} (off) or {bound}"
        raise ConfigError(f"run-config key '{key}': must be {bound}, got {value} {fix}")
    if high is not None and value > high:
        shown = f"{high:g}" if isinstance(high, float) else str(high)
        raise ConfigError(f"run-config key '{key}': must be <= {shown}, got {value} {fix}")


def check_text(key: str, value: str, *, is_path: bool) -> None:
    """No control characters (C0, DEL, C1) anywhere, text that encodes (no lone surrogates,
    which neither TOML nor Flower's messages carry), and paths a file system takes."""
    for position, char in enumerate(value):
        category = unicodedata.category(char)
        if category == "Cc":
            raise ConfigError(
                f"run-config key '{key}': contains control character U+{ord(char):04X} at "
                f"position {position} in {shown(value)}; remove it"
            )
        if category == "Cs":
            raise ConfigError(
                f"run-config key '{key}': {shown(value)} is not valid Unicode text (lone "
                f"surrogate U+{ord(char):04X} at position {position})"
            )
    if not is_path:
        return
    encoded = value.encode()
    if len(encoded) >= PATH_MAX_BYTES:
        raise ConfigError(
            f"run-config key '{key}': path of {len(encoded)} bytes; paths must be shorter than "
            f"{PATH_MAX_BYTES} bytes"
        )
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > NAME_MAX_BYTES:
        raise ConfigError(
            f"run-config key '{key}': path component {shown(longest.decode())} is "
            f"{len(longest)} bytes; a file name may have at most {NAME_MAX_BYTES} bytes"
        )


def choice_message(key: str, value: Any, allowed: Iterable[str]) -> str:
    """One line for a value outside a registry: the closest valid value and all of them."""
    allowed = list(allowed)
    close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"run-config key '{key}': unknown value {value!r}; {hint}allowed: {', '.join(allowed)}"
