"""Shared pieces of the algorithm benchmarks: run presets through ``flwr run`` and summarise."""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fedticket.results import markdown_table
from simulations.launcher import PROJECT_DIR, LaunchResult, launch

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = PROJECT_DIR / "simulations" / "presets"
SHARED_MNIST = PROJECT_DIR.parent / "shared" / "datasets" / "mnist"


def benchmark_parser(description: str) -> argparse.ArgumentParser:
    """The options every algorithm benchmark takes: data pool, round count, output folder."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--dataset", choices=["mnist-offline", "mnist-idx"], default="mnist-offline"
    )
    parser.add_argument("--rounds", type=int, default=None, help="override num-rounds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def base_overrides(args: argparse.Namespace) -> dict:
    """Run-config overrides from ``benchmark_parser``'s options."""
    overrides: dict = {"output-root": str(args.out / "runs")}
    if args.dataset == "mnist-idx":
        overrides |= {"dataset": "mnist-idx", "data-dir": str(SHARED_MNIST)}
    if args.rounds:
        overrides["num-rounds"] = args.rounds
    return overrides


def run_preset(preset: str, overrides: dict) -> LaunchResult:
    """One ``flwr run`` of a preset; as many simulated clients as it needs available."""
    config = tomllib.loads((PRESETS / preset).read_text()) | overrides
    nodes = int(config.get("min-available-clients", 2))
    result = launch(config, num_supernodes=nodes, cpus_per_client=1, timeout=3600)
    if result.returncode != 0 or result.run_dir is None:
        raise SystemExit(f"{preset} {overrides} failed:\n{result.output[-3000:]}")
    return result


Variant = tuple[str, str, dict]  # (name, preset, run-config overrides)


def add_variants_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--variants", nargs="*", default=None, help="names from VARIANTS to run (default: all)"
    )


def run_variants(
    variants: list[Variant],
    selected: list[str] | None,
    overrides: dict,
    summarise: Callable[[str, Path, float], dict],
) -> pd.DataFrame:
    """Run each selected variant (None: all) through ``flwr run`` with ``overrides`` on top of
    its preset and changes, one summary row per run."""
    rows = []
    for name, preset, changes in variants:
        if selected is not None and name not in selected:
            continue
        result = run_preset(preset, overrides | changes)
        rows.append(summarise(name, result.run_dir, result.seconds))
        print(f"{name}: done in {result.seconds:.0f} s", flush=True)
    return pd.DataFrame(rows)


def cumulative_message_bytes(rounds: pd.DataFrame) -> pd.Series:
    return (
        rounds.set_index("round")[["message_bytes_down", "message_bytes_up"]].sum(axis=1).cumsum()
    )


def write_table(table: pd.DataFrame, out: Path, stem: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{stem}.csv", index=False)
    shown = table.drop(columns=[c for c in ("run_dir",) if c in table])
    (out / f"{stem}.md").write_text(markdown_table(shown))
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
