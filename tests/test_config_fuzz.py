"""Property tests of the run config (issue #19): no value of any type reaches a run unless it
is finite, in range and of its key's type; strings parse exactly as ``flwr run`` parses them;
the launcher writes values Flower reads back unchanged. ``benchmarks.config_fuzz`` runs the
same checks over 1,000 seeded cases (the slow test at the end)."""

from __future__ import annotations

import math
import re

import pytest
from flwr.common.config import parse_config_args
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from benchmarks.config_fuzz import (
    EDGE_FLOATS,
    EDGE_INTS,
    EDGE_STRS,
    FIELDS,
    KEYS,
    same_dict,
    violations,
)
from fedticket.config import (
    FLOWER_PAIR,
    ConfigError,
    RunConfig,
    ignored_run_config_text,
    parse_run_config_string,
)
from fedticket.simulations.launcher import run_config_string, toml_value

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# hypothesis cannot repr an int of over 4,300 digits: build those instead of listing them
edges = st.sampled_from(
    EDGE_FLOATS + [n for n in EDGE_INTS if n.bit_length() < 10_000] + EDGE_STRS
) | st.builds(lambda digits: 10**digits, st.integers(4300, 5000))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
    edges,
)
any_value = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@st.composite
def near_bounds(draw: st.DrawFn, key: str) -> object:
    """A key's valid values and the edges of its range: bounds, just inside, just outside."""
    meta = FIELDS[key].metadata
    if meta["choices"] is not None:
        choices = meta["choices"]
        return draw(st.sampled_from(list(choices() if callable(choices) else choices)))
    bounds = [b for b in (meta["low"], meta["high"], meta["off"]) if b is not None]
    if not bounds:
        return FIELDS[key].default
    bound = draw(st.sampled_from(bounds))
    step = draw(st.sampled_from([-math.inf, math.inf]))
    return draw(st.sampled_from([bound, math.nextafter(bound, step), int(bound), int(bound) + 1]))


def assert_sane_or_config_error(raw: dict) -> None:
    try:
        config = RunConfig.from_run_config(raw)
    except ConfigError as exc:
        assert len(str(exc).splitlines()) == 1, str(exc)
        return
    assert violations(config) == []


@FAST
@given(key=st.sampled_from(KEYS), value=any_value)
def test_any_single_value_is_sane_or_a_config_error(key: str, value: object) -> None:
    assert_sane_or_config_error({key: value})


@FAST
@given(data=st.data(), keys=st.lists(st.sampled_from(KEYS), max_size=8, unique=True))
def test_any_combination_is_sane_or_a_config_error(data: st.DataObject, keys: list[str]) -> None:
    raw = {key: data.draw(near_bounds(key) | any_value) for key in keys}
    assert_sane_or_config_error(raw)


@FAST
@given(raw=st.dictionaries(st.text(max_size=8) | st.integers() | st.none(), any_value))
def test_any_keys_are_sane_or_a_config_error(raw: dict) -> None:
    assert_sane_or_config_error(raw)


# ---------------------------------------------------------------- --run-config strings
printable = st.characters(exclude_categories=("Cs",))
quoted = st.one_of(
    st.text(printable.filter(lambda c: c != '"'), max_size=8).map(lambda t: f'"{t}"'),
    st.text(printable.filter(lambda c: c != "'"), max_size=8).map(lambda t: f"'{t}'"),
    st.text(printable, max_size=6).map(lambda t: f'"{t}'),  # unbalanced
    st.sampled_from(['"a b"', "'a b'", '"x=y z"', "'say \"hi\"'", '"\\u00e9"', '"😀 ü"']),
)
bare = st.one_of(
    st.sampled_from(
        [
            "1",
            "-1",
            "0.5",
            "nan",
            "+nan",
            "-nan",
            "inf",
            "-inf",
            "1e400",
            "-0.0",
            "true",
            "9223372036854775808",
            "[1,2]",
            "{a=1}",
            "1979-05-27",
            "0x10",
            "1_000",
            "mnist",
            "=",
        ]
    ),
    st.text(st.characters(exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1),
)
keys = st.sampled_from(KEYS) | st.sampled_from(['"lr"', "a.b", "lr!", "l.r.x", "ü"])
pairs = st.builds(
    lambda k, s, v: f"{k}{s}{v}", keys, st.sampled_from(["="] * 6 + [" = "]), quoted | bare
)
strings = st.builds(
    lambda parts, sep: sep.join(parts),
    st.lists(pairs | st.sampled_from(["junk", "lr=", "= 1", ""]), max_size=5),
    st.sampled_from([" ", "  ", "\t", "\n"]),
)


@FAST
@given(text=strings)
def test_strings_parse_exactly_as_flower_parses_them(text: str) -> None:
    assume(not text.endswith(".toml"))  # Flower reads that as a file name
    try:
        expected = parse_config_args([text])
    except Exception:  # any refusal of Flower's is ours too, as a ConfigError
        with pytest.raises(ConfigError) as err:
            parse_run_config_string(text)
        assert len(str(err.value).splitlines()) == 1, str(err.value)
        return
    assert same_dict(parse_run_config_string(text), expected)
    assert_sane_or_config_error(expected)


@FAST
@given(text=strings)
def test_ignored_text_is_what_flower_drops(text: str) -> None:
    assume(not text.endswith(".toml"))
    ignored = ignored_run_config_text(text)
    assert all(FLOWER_PAIR.search(part) is None for part in ignored)
    kept = " ".join(m.group(0) for m in FLOWER_PAIR.finditer(text))
    shown = re.sub(r"\s", "", "".join(ignored) + kept)
    assert sorted(shown) == sorted(re.sub(r"\s", "", text))  # nothing lost, nothing invented
    try:
        expected = parse_config_args([text])
    except Exception:
        return
    assert same_dict(parse_config_args([kept]), expected)


# ---------------------------------------------------------------- launcher.toml_value
def _read_back(value: object) -> object:
    return parse_config_args([f"k={toml_value(value)}"])["k"]


@FAST
@given(value=st.text(st.characters(exclude_categories=("Cs",))))
def test_any_text_round_trips_through_flower_or_is_refused(value: str) -> None:
    controls = {c for c in value if c < " " or "\x7f" <= c <= "\x9f"} - {"\t"}
    if '"' in value and ("'" in value or controls):
        with pytest.raises(ValueError, match="Flower"):
            toml_value(value)
        return
    assert _read_back(value) == value


@FAST
@given(value=st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats() | st.booleans())
def test_numbers_and_bools_round_trip_through_flower(value: object) -> None:
    back = _read_back(value)
    assert type(back) is type(value)
    assert (math.isnan(back) and math.isnan(value)) if back != back else back == value


@FAST
@given(
    values=st.dictionaries(
        st.sampled_from(KEYS),
        st.text(st.characters(exclude_categories=("Cs",), exclude_characters='"'))
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False)
        | st.booleans(),
    )
)
def test_a_whole_run_config_string_round_trips(values: dict) -> None:
    text = run_config_string(values)
    assume(not text.endswith(".toml"))
    assert same_dict(parse_config_args([text]), values)


@pytest.mark.slow
def test_the_config_fuzz_benchmark_finds_nothing(tmp_path) -> None:
    import pandas as pd

    from benchmarks.config_fuzz import main

    assert main(["--cases", "1000", "--seed", "0", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "config_fuzz.csv")
    assert set(KEYS) <= set(table["key"])
    assert table[["other_exception", "accepted_invalid", "flower_mismatch"]].sum().sum() == 0
    assert (tmp_path / "config_fuzz.md").exists()
