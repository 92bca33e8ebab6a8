"""Compare algorithms on identical data and seeds: one command, one table, the figures.

A comparison preset (``simulations/presets/compare/<name>.toml``) names a shared setup
(``base``: a run preset's file name, or an inline table of run-config keys), optionally
``seeds`` (every run once per seed), and a list of ``[[runs]]``, each a ``label`` plus the keys
it changes. Every run is a normal ``flwr run`` with
its own run directory; a run whose directory already holds all its rounds (same config hash) is
reused, not repeated. The per-run table (``comparison.csv``: every protocol's final value, mean of
the last 3 evaluations and std over clients), the same as mean +- std over seeds
(``comparison_seeds.csv``), both also as Markdown, and the figures (``fedticket.analysis.plots``) go
to ``<output-root>/comparisons/<name>/``.

Usage::

    python -m fedticket.simulations.compare --preset offline-default
    python -m fedticket.simulations.compare --preset smoke --output-root /tmp/runs
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from fedticket.analysis.plots import draw_all
from fedticket.analysis.summaries import LAST_K, over_seeds, run_summary, seeds_table
from fedticket.config import ConfigError, RunConfig
from fedticket.learn.eval_protocols import PROTOCOLS
from fedticket.simulations.launcher import PROJECT_DIR, launch
from fedticket.store.results import load_run, markdown_table, read_table, resolve_output_root

# in a clone <root>/simulations/presets; in a wheel PROJECT_DIR is site-packages/fedticket, whose
# simulations/presets holds the same files (package data)
PRESETS = PROJECT_DIR / "simulations" / "presets"
ROUND_LINE = re.compile(r"round (\d+)/(\d+)")


class CompareError(ValueError):
    """A comparison preset that cannot be run; the message names the problem and the fix."""


@dataclass(frozen=True)
class PlannedRun:
    label: str  # unique: the run's label, plus its seed when the preset lists several
    config: dict[str, Any]
    run_dir: Path
    group: str = ""  # the preset's [[runs]] label (the same for every seed)

    @property
    def complete(self) -> bool:
        rounds = self.run_dir / "rounds.parquet"
        if not (rounds.exists() and (self.run_dir / "config.json").exists()):
            return False
        return len(read_table(rounds, columns=["round"])) >= self.config["num-rounds"]


def load_preset(name: str, output_root: str = "") -> tuple[str, list[PlannedRun]]:
    """Resolve a comparison preset (a name in presets/compare/ or a path) into validated runs."""
    path = Path(name)
    if not path.suffix:
        path = PRESETS / "compare" / f"{name}.toml"
    if not path.exists():
        known = sorted(p.stem for p in (PRESETS / "compare").glob("*.toml"))
        raise CompareError(f"no comparison preset {name!r}; known: {', '.join(known)}")
    spec = tomllib.loads(path.read_text())
    base = spec.get("base", {})
    if isinstance(base, str):
        base = tomllib.loads((PRESETS / base).read_text())
    runs = spec.get("runs", [])
    if not runs:
        raise CompareError(f"{path}: add at least one [[runs]] table with a label")
    labels = [r.get("label", "") for r in runs]
    if "" in labels or len(set(labels)) != len(labels):
        raise CompareError(f"{path}: every [[runs]] needs its own non-empty label, got {labels}")
    seeds = spec.get("seeds", [None])
    valid = all(
        s is None or (isinstance(s, int) and not isinstance(s, bool) and s >= 0) for s in seeds
    )
    if not seeds or not valid or len(set(seeds)) != len(seeds):
        raise CompareError(
            f"{path}: seeds must be a non-empty list of distinct integers >= 0, got {seeds}"
        )
    if "seeds" in spec and any("seed" in run for run in runs):
        raise CompareError(f"{path}: with seeds = [...] a [[runs]] entry cannot set its own seed")
    planned = []
    for seed in seeds:
        for run in runs:
            config = dict(base) | {k: v for k, v in run.items() if k != "label"}
            config |= {"seed": seed} if seed is not None else {}
            if output_root:
                config["output-root"] = output_root
            try:
                resolved = RunConfig.from_run_config(config)
            except ConfigError as exc:
                raise CompareError(f"{path}, run {run['label']!r}: {exc}") from None
            root = resolve_output_root(resolved.output_root)
            config = resolved.to_dict() | {"output-root": str(root)}
            run_dir = root / resolved.algorithm / resolved.config_hash()
            label = run["label"] if len(seeds) == 1 else f"{run['label']} seed={seed}"
            planned.append(PlannedRun(label, config, run_dir, run["label"]))
    return path.stem, planned


def summarise(label: str, run: Mapping[str, Any], reused: bool) -> dict[str, Any]:
    """One row: per protocol the final round, the mean of the last ``LAST_K`` evaluations and
    the std over clients (``fedticket.analysis.summaries``), then density and bytes."""
    rounds, comm = run["rounds"], run["comm"]
    down = comm.loc[comm["direction"] == "down", "message_bytes"].sum()
    up = comm.loc[comm["direction"] == "up", "message_bytes"].sum()
    return {
        "run": label,
        "algorithm": run["config"]["algorithm"],
        "rounds": len(rounds),
        **run_summary(rounds),
        "final_density": rounds["mean_density"].dropna().iloc[-1]
        if rounds["mean_density"].notna().any()
        else float("nan"),
        "MB_down": down / 1e6,
        "MB_up": up / 1e6,
        "MB_total": (down + up) / 1e6,
        "dense_vs_sent": comm["dense_bytes"].sum() / max(down + up, 1),
        "reused": reused,
    }


def compare(
    preset: str, output_root: str = "", out: Path | None = None, progress: bool = True
) -> tuple[pd.DataFrame, Path]:
    """Run (or reuse) every run of ``preset``; write the table and figures; return both."""
    name, planned = load_preset(preset, output_root)
    runs: dict[str, dict[str, Any]] = {}
    rows = []
    outer = tqdm(planned, desc=f"compare {name}", unit="run", disable=not progress)
    for plan in outer:
        reused = plan.complete
        if not reused:
            bar = tqdm(
                total=plan.config["num-rounds"], desc=plan.label, unit="round",
                leave=False, disable=not progress,
            )  # fmt: skip

            def advance(line: str, bar: tqdm = bar) -> None:
                match = ROUND_LINE.search(line)
                if match:
                    bar.update(int(match.group(1)) - bar.n)

            result = launch(
                plan.config,
                num_supernodes=int(plan.config["min-available-clients"]),
                cpus_per_client=1,
                timeout=24 * 3600,
                on_line=advance,
            )
            bar.close()
            if result.returncode != 0 or not plan.complete:
                raise CompareError(
                    f"run {plan.label!r} failed (exit {result.returncode}"
                    f"{': ' + result.failure if result.failure else ''}); its output ends:\n"
                    + result.output[-2000:]
                )
        runs[plan.label] = load_run(plan.run_dir)
        rows.append(
            {"group": plan.group}
            | summarise(plan.label, runs[plan.label], reused)
            | {"seed": plan.config["seed"], "run_dir": str(plan.run_dir)}
        )
    table = pd.DataFrame(rows)
    target = (
        out
        or resolve_output_root(output_root or planned[0].config["output-root"])
        / "comparisons"
        / name
    )
    target.mkdir(parents=True, exist_ok=True)
    table.to_csv(target / "comparison.csv", index=False)
    (target / "comparison.md").write_text(markdown_table(table.drop(columns=["run_dir"])))
    seeds = seeds_summary(table)
    seeds.to_csv(target / "comparison_seeds.csv", index=False)
    (target / "comparison_seeds.md").write_text(markdown_table(seeds))
    draw_all(runs, target / "plots")
    return table, target


def seeds_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Each [[runs]] entry as mean +- std over its seeds: every protocol's mean of the last
    ``LAST_K`` evaluations and its std over clients, density and bytes."""
    numeric = table.drop(columns=["run", "run_dir", "reused"])
    summary = over_seeds(numeric, ["group", "algorithm"])
    k = f"last{LAST_K}"
    columns = [f"{p}_{k}" for p in PROTOCOLS] + [f"{p}_client_std" for p in ("served", "local")]
    shown = seeds_table(summary, ["group", "algorithm"], [*columns, "final_density", "MB_total"])
    return shown.rename(columns={"group": "run"})


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, help="name in presets/compare/ or a path")
    parser.add_argument("--output-root", default="", help="where runs go (default as for runs)")
    parser.add_argument("--out", type=Path, default=None, help="comparison folder")
    args = parser.parse_args(argv)
    try:
        table, target = compare(args.preset, args.output_root, args.out)
    except CompareError as exc:
        print(f"fedticket compare: {exc}", file=sys.stderr)
        return 2
    print(seeds_summary(table).to_string(index=False))
    print(f"comparison: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
