"""Config fuzz: random run configs, alone and in combinations, through both ways a config
arrives (a ``--run-config`` string, parsed as ``flwr run`` does, and a Python dict from a test or
preset), and what the typed config makes of them.

Every case must either give a ``RunConfig`` whose every value has its declared type, is finite,
in range and free of control characters, or raise ``ConfigError``; a string must parse to what
Flower's own parser gives. Per key: cases that set it, accepted, ConfigError, any other
exception, accepted but invalid, parsed unlike Flower. Exits 1 on any of the last three.

Usage::

    python -m benchmarks.config_fuzz [--cases 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import typing
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from fedticket.config import (
    INT64_MAX,
    INT64_MIN,
    ConfigError,
    RunConfig,
    key_owners,
    parse_run_config_string,
)

RESULTS = Path(__file__).resolve().parent / "results"
OWNERS = key_owners()  # run-config key -> (RunConfig or an algorithm's section, its field)
FIELDS = {key: spec for key, (_, spec) in OWNERS.items()}
KEYS = sorted(FIELDS)
TYPES = {key: typing.get_type_hints(owner)[spec.name] for key, (owner, spec) in OWNERS.items()}

EDGE_FLOATS = [
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    -0.0,
    0.0,
    5e-324,
    1e-300,
    1e300,
    1.7976931348623157e308,
    0.5,
    1.0,
    -1.0,
    2.0**63,
]
EDGE_INTS = [
    0,
    1,
    -1,
    2**31 - 1,
    2**32 - 1,
    2**32,
    2**53 + 1,
    INT64_MAX,
    INT64_MAX + 1,
    INT64_MIN,
    INT64_MIN - 1,
    10**400,
    10**5000,
]
EDGE_STRS = [
    "",
    " ",
    "a\x00b",
    "line\nbreak",
    "tab\t",
    "\x1b[31m",
    "del\x7f",
    "c1\x85",
    "\x9f",
    "lone\ud800",
    "😀",
    "ünï",
    "a b",
    "x=y",
    "'",
    '"',
    "\\",
    "\u2028",
    "x" * 300,
    "/a" * 2100,
    "cuda:128",
    "cuda:٣",
    "cuda:0",
    "cpu ",
]
OUTCOMES = ("accepted", "config_error", "other_exception", "accepted_invalid", "flower_mismatch")


def violations(config: RunConfig) -> list[str]:
    """What is wrong with an accepted config, checked against each key's declared type, range
    and choices; empty when nothing is."""
    found = []
    for key, spec in FIELDS.items():
        value, kind, meta = config.value(key), TYPES[key], spec.metadata
        if type(value) is not kind:
            found.append(f"{key}: {type(value).__name__} {value!r}, not {kind.__name__}")
            continue
        if kind is float and not math.isfinite(value) and not meta["allow_inf"]:
            found.append(f"{key}: non-finite {value}")
        if kind is int and not INT64_MIN <= value <= INT64_MAX:
            found.append(f"{key}: {value} outside int64")
        if kind is str and any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
            found.append(f"{key}: control or surrogate character in {value!r}")
        found += _range_violations(key, value, meta)
    return found


def _range_violations(key: str, value: Any, meta: typing.Mapping[str, Any]) -> list[str]:
    choices = meta["choices"]
    if choices is not None:
        allowed = list(choices() if callable(choices) else choices)
        return [] if value in allowed else [f"{key}: {value!r} not a choice"]
    if isinstance(value, str | bool) or (meta["off"] is not None and value == meta["off"]):
        return []
    low, high = meta["low"], meta["high"]
    if low is not None and (value <= low if meta["low_open"] else value < low):
        return [f"{key}: {value} below {low}"]
    if high is not None and value > high:
        return [f"{key}: {value} above {high}"]
    return []


# ---------------------------------------------------------------- values
def valid_value(rng: random.Random, key: str) -> Any:
    """A value the key should take (a choice, a number inside its range)."""
    spec, kind = FIELDS[key], TYPES[key]
    meta = spec.metadata
    if meta["choices"] is not None:
        choices = meta["choices"]
        return rng.choice(list(choices() if callable(choices) else choices))
    if kind is bool:
        return rng.random() < 0.5
    if kind is str:
        options = {"device": ["auto", "cpu", "cuda", "cuda:0", "cuda:127"]}.get(key)
        return rng.choice(options or ["", "/tmp/runs", "~/r 😀/ü", "relative/dir", "a'b", 'a"b'])
    low = meta["low"] if meta["low"] is not None else 0
    high = meta["high"] if meta["high"] is not None else low + 100
    if kind is int:
        return rng.choice([int(low), int(high), rng.randint(int(low), min(int(high), 10_000))])
    if meta["low_open"] and rng.random() < 0.9:
        return rng.uniform(low, high) or high
    return rng.choice([float(low), float(high), rng.uniform(low, high)])


def edge_value(rng: random.Random, key: str) -> Any:
    """A value from anywhere: every TOML type and Python's, edges, bounds and just past them."""
    meta = FIELDS[key].metadata
    near = [b for b in (meta["low"], meta["high"]) if b is not None]
    pick = rng.randrange(10)
    if pick == 0 and near:
        bound = rng.choice(near)
        return rng.choice([math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)])
    if pick == 1:
        return rng.choice(EDGE_FLOATS)
    if pick == 2:
        return rng.choice(EDGE_INTS)
    if pick == 3:
        return rng.choice(EDGE_STRS)
    if pick == 4:
        return rng.choice([True, False, None, [], [1, 2], {}, {"a": 1}, (1,), b"x"])
    if pick == 5:
        return random_text(rng)
    if pick == 6:
        return rng.choice([rng.randint(-(2**70), 2**70), rng.randint(-5, 5)])
    if pick == 7:
        return rng.choice([-1, 1]) * 10 ** rng.uniform(-320, 308)
    return valid_value(rng, key)


def random_text(rng: random.Random, size: int = 8) -> str:
    """Mostly printable text with controls, quotes, spaces and characters outside the BMP."""
    pool = "ab/ .=-_'\"\\\x00\x01\n\t\x7f\x85é😀中\u2028"
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, size)))


def value_text(rng: random.Random, key: str) -> str:
    """One ``--run-config`` value as a user might type it, valid or not."""
    pick = rng.randrange(12)
    if pick == 0 or pick >= 8:  # a third valid, so combinations of them pass too
        value = valid_value(rng, key)
        if isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        return json.dumps(value) if isinstance(value, bool) else repr(value)
    if pick == 1:
        return rng.choice(
            ["nan", "+nan", "-nan", "inf", "+inf", "-inf", "1e400", "-0.0", "9223372036854775808"]
        )
    if pick == 2:
        return rng.choice(["[1,2]", "{a=1}", "1979-05-27", "07:32:00", "0x10", "1_000", "true"])
    if pick == 3:
        return f'"{random_text(rng).replace(chr(34), "")}"'
    if pick == 4:
        return f"'{random_text(rng).replace(chr(39), '')}'"
    if pick == 5:
        return rng.choice(['"unclosed', "'unclosed", "mnist", '"a"b', "=", '"x=y"', '"\\u0000"'])
    if pick == 6:
        return str(rng.randint(-(2**64), 2**64))
    return repr(rng.choice(EDGE_FLOATS))  # pick 7


def run_config_text(rng: random.Random, keys: list[str]) -> str:
    """A ``--run-config`` string over ``keys``, with the spacing mistakes users make."""
    pairs = []
    for key in keys:
        separator = rng.choice(["="] * 12 + [" = ", "= ", " ="])
        pairs.append(f"{key}{separator}{value_text(rng, key)}")
    if keys and rng.random() < 0.1:
        pairs.append(f"{keys[0]}={value_text(rng, keys[0])}")  # a duplicate
    return rng.choice([" ", "  ", "\t"]).join(pairs)


# ---------------------------------------------------------------- cases
def same_dict(a: dict, b: dict) -> bool:
    """Equal keys, types and values, NaN equal to NaN (``==`` on dicts says it is not)."""
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(
        b, sort_keys=True, default=repr
    )


def run_case(raw: dict) -> tuple[str, str]:
    """(outcome, detail) of one dict through ``RunConfig.from_run_config``."""
    try:
        config = RunConfig.from_run_config(raw)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        return ("config_error", "") if len(lines) == 1 else ("other_exception", f"lines {lines}")
    except Exception as exc:
        return "other_exception", f"{type(exc).__name__}: {exc}"[:300]
    problems = violations(config)
    return ("accepted_invalid", "; ".join(problems)) if problems else ("accepted", "")


def run_string_case(text: str) -> tuple[str, str]:
    """One string through ``parse_run_config_string`` (checked against Flower's parser), then
    ``run_case``."""
    from flwr.common.config import parse_config_args

    try:
        expected = parse_config_args([text])
    except Exception as exc:
        expected = exc
    try:
        parsed = parse_run_config_string(text)
    except ConfigError as exc:
        if not isinstance(expected, Exception):
            return "flower_mismatch", f"Flower took {text!r}, we refused: {exc}"
        return "config_error", ""
    except Exception as exc:
        return "other_exception", f"{type(exc).__name__} parsing {text!r}: {exc}"[:300]
    if isinstance(expected, Exception) or not same_dict(parsed, expected):
        return "flower_mismatch", f"{text!r}: ours {parsed!r}, Flower's {expected!r}"[:300]
    return run_case(parsed)


def generate(rng: random.Random, index: int) -> tuple[str, list[str], Any]:
    """(kind, keys, input) of case ``index``: single keys, dict combinations and strings."""
    kind = ("single", "combination", "string")[index % 3]
    if kind == "single":
        key = KEYS[(index // 3) % len(KEYS)]
        return kind, [key], {key: edge_value(rng, key)}
    keys = rng.sample(KEYS, rng.randint(2, 6))
    if kind == "combination":
        mostly_valid = rng.random() < 0.5
        draw = valid_value if mostly_valid else edge_value
        return kind, keys, {k: draw(rng, k) for k in keys}
    return kind, keys, run_config_text(rng, keys)


def _short(value: Any) -> str:
    try:
        return repr(value)[:200]
    except ValueError:  # an int of more than 4,300 digits inside
        return f"<{type(value).__name__} too long to show>"


def fuzz(cases: int, seed: int) -> tuple[dict[str, Counter], list[str]]:
    rng = random.Random(seed)
    per_key: dict[str, Counter] = defaultdict(Counter)
    failures = []
    for index in range(cases):
        kind, keys, given = generate(rng, index)
        outcome, detail = run_string_case(given) if kind == "string" else run_case(given)
        for key in [*keys, f"(all {kind})", "(all)"]:
            per_key[key]["cases"] += 1
            per_key[key][outcome] += 1
        if outcome not in ("accepted", "config_error"):
            failures.append(f"{kind} {_short(given)}: {outcome}: {detail}")
    return per_key, failures


def table(per_key: dict[str, Counter]):
    import pandas as pd

    rows = [{"key": key, **{c: per_key[key][c] for c in ("cases", *OUTCOMES)}} for key in per_key]
    frame = pd.DataFrame(rows)
    singles = ~frame["key"].str.startswith("(")
    return pd.concat([frame[singles].sort_values("key"), frame[~singles].sort_values("key")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    per_key, failures = fuzz(args.cases, args.seed)
    from benchmarks.common import write_table

    write_table(table(per_key), args.out, "config_fuzz")
    for failure in failures[:20]:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"{args.cases} cases (seed {args.seed}): {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
