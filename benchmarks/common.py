"""Shared pieces of the algorithm benchmarks: run presets through ``flwr run`` and summarise."""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from fedticket.analysis.summaries import LAST_K, mean_std, over_seeds, run_summary, seeds_table
from fedticket.learn.eval_protocols import PROTOCOLS
from fedticket.simulations.launcher import PROJECT_DIR, LaunchResult, launch
from fedticket.store.results import markdown_table

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
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2, 3], help="one run per seed and variant"
    )
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


def run_seeded(
    variants: list[Variant],
    selected: list[str] | None,
    seeds: list[int],
    overrides: dict,
    summarise: Callable[[str, Path, float], dict],
) -> pd.DataFrame:
    """``run_variants`` once per seed (seed outermost, so a stopped benchmark has whole seeds);
    rows carry ``variant`` and ``seed``."""
    rows = []
    for seed in seeds:
        table = run_variants(variants, selected, overrides | {"seed": seed}, summarise)
        rows.append(table.assign(seed=seed))
    return pd.concat(rows, ignore_index=True)


def run_metrics(run_dir: Path) -> dict:
    """What every reproduction reports of one run: each protocol's final value, mean of the
    last ``LAST_K`` evaluations and std over clients (``fedticket.analysis.summaries``), bytes both
    directions and the final mean density."""
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    comm = pd.read_parquet(run_dir / "comm.parquet")
    density = rounds["mean_density"].dropna()
    return {
        "rounds": int(rounds["round"].max()),
        **run_summary(rounds),
        "payload_MB": comm["payload_bytes"].sum() / 1e6,
        "message_MB": comm["message_bytes"].sum() / 1e6,
        "final_density": float(density.iloc[-1]) if len(density) else float("nan"),
        "run_dir": str(run_dir),
    }


def protocol_tables(
    runs: pd.DataFrame, paper_protocol: Mapping[str, str], extra: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two tables of a reproduction, mean +- std over seeds of the last ``LAST_K``
    evaluations: (a) each variant under the protocol its paper reports it with (named in the
    row: the paper compares different protocols), (b) every variant under every protocol."""
    numeric = runs.drop(columns=[c for c in ("run_dir",) if c in runs])
    seeds = over_seeds(numeric, ["variant"])
    k = f"last{LAST_K}"
    rows_a = []
    for _, row in seeds.iterrows():
        protocol = paper_protocol[row["variant"]]
        rows_a.append(
            {
                "variant": row["variant"],
                "paper's protocol": protocol,
                f"accuracy (mean of last {LAST_K} evals)": mean_std(
                    row[f"{protocol}_{k}_mean"], row[f"{protocol}_{k}_std"]
                ),
                "final-round accuracy": mean_std(
                    row[f"{protocol}_final_mean"], row[f"{protocol}_final_std"]
                ),
                "message MB": mean_std(row["message_MB_mean"], row["message_MB_std"], 1),
                "seeds": int(row["seeds"]),
            }
        )
    shown = [f"{p}_{k}" for p in PROTOCOLS] + ["served_client_std", "final_density"]
    table_b = seeds_table(seeds, ["variant"], [*shown, "message_MB", *(extra or [])])
    table_b = table_b.rename(columns={f"{p}_{k}": p for p in PROTOCOLS})
    return pd.DataFrame(rows_a), table_b


def write_reproduction(
    name: str, runs: pd.DataFrame, paper_protocol: Mapping[str, str], out: Path, **kw
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the per-run rows and both protocol tables (CSV and Markdown) and print them."""
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / f"{name}_runs.csv", index=False)
    table_a, table_b = protocol_tables(runs, paper_protocol, **kw)
    for suffix, table in (("paper_protocol", table_a), ("one_protocol", table_b)):
        table.to_csv(out / f"{name}_{suffix}.csv", index=False)
        (out / f"{name}_{suffix}.md").write_text(markdown_table(table))
        print(f"\n{name}: {suffix.replace('_', ' ')}")
        print(table.to_string(index=False))
    return table_a, table_b


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
