"""Refactor guard: a seeded run of every algorithm gives bit-identical results before and after.

Runs seven short seeded federations in this process (the tests' loopback grid,
``tests/loopback.py``: the real strategy and client code, no Ray, no ``flwr run``): FedAvg,
LotteryFL (always pruning), FedLTN on the BatchNorm CNN (client state on disk, so the snapshot
path runs) and FLASH in its three modes (SPDST, JMWST, hetero with two device classes). Each
run writes under a temporary output root, and its clients keep their disk state under a
temporary ``FEDTICKET_STATE_HOME``.

Every results table of a run (``*.parquet``: rounds, clients, comm, masks), wall-clock columns
(``WALL_CLOCK_COLUMNS``) dropped, gets an exact digest: sha256 over the column names, dtypes and
each cell's canonical bytes (numbers as their bit patterns, every NaN as one pattern, -0.0 kept
apart from 0.0, strings as UTF-8). So do the server's final global model
(``strategy.global_model()``, arrays by name) and its masks (``strategy.masks``, per client;
FLASH: and ``strategy.consensus``).

``--record`` writes ``identity_reference.json`` (the digests, the configs, the git commit and
the library versions) and keeps copies of the tables and arrays in ``identity_reference/``;
``--check`` (the default) reruns, prints run x table as ``same`` or ``DIFFERENT`` (for a
difference: the first differing column and row, or array and index, against those copies),
writes ``identity_check.md`` and exits 1 on any difference or failed run. Bit identity holds on
one machine and library stack: the check names any version that differs from the record.

The runs (the one module importing the code under test) are in ``identity_runs``, the canonical
bytes and first differences in ``identity_digest``, the reference in ``identity_record``; this
module compares and reports.

Usage::

    python -m benchmarks.identity --record          # at the commit to compare against
    python -m benchmarks.identity                   # after the change: same as --check
    python -m benchmarks.identity --runs fedavg flash-spdst
    python -m benchmarks.identity --record --out /elsewhere/results
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.identity_digest import first_difference_in_arrays, first_difference_in_frames
from benchmarks.identity_record import CACHE, REFERENCE, environment, record
from benchmarks.identity_runs import (
    MODEL,
    RUNS,
    SERVER_MASKS,
    Outcome,
    code_root,
    comparable,
    run_all,
)

RESULTS = Path(__file__).resolve().parent / "results"
REPORT = "identity_check.md"


def locate(out: Path, run: str, table: str, outcome: Outcome) -> str:
    """The first difference against the copy kept when the reference was recorded."""
    suffix = ".npz" if table in outcome.arrays else ".parquet"
    cached = out / CACHE / run / f"{table}{suffix}"
    if table not in outcome.arrays and table not in outcome.tables:
        return "table missing now"
    if not cached.exists():
        return f"not localised: no cached copy {cached}"
    if table in outcome.arrays:
        with np.load(cached) as ref:
            return first_difference_in_arrays(dict(ref), outcome.arrays[table])
    return first_difference_in_frames(comparable(cached), outcome.tables[table])


def check(outcomes: dict[str, Outcome], out: Path) -> bool:
    path = out / REFERENCE
    if not path.exists():
        raise SystemExit(f"no reference at {path}: record one first (--record, at the old commit)")
    reference = json.loads(path.read_text())
    rows, details = [], []
    for run, outcome in outcomes.items():
        expected = reference["runs"].get(run)
        if expected is None:
            rows.append({"run": run, "status": "not in reference"})
            continue
        if outcome.error:
            rows.append({"run": run, "status": "FAILED"})
            details.append(f"{run} failed:\n```\n{outcome.error}```")
            continue
        got = outcome.entries()
        row = {"run": run, "seconds": f"{outcome.seconds:.1f}"}
        for table in sorted(set(expected) | set(got), key=_table_order):
            if table not in got:
                row[table] = "DIFFERENT"
                details.append(f"{run} / {table}: missing now")
            elif table not in expected:
                row[table] = "DIFFERENT"
                details.append(f"{run} / {table}: new table (not in the reference)")
            elif got[table]["sha256"] == expected[table]["sha256"]:
                row[table] = "same"
            else:
                row[table] = "DIFFERENT"
                details.append(f"{run} / {table}: {locate(out, run, table, outcome)}")
        rows.append(row)
    table = pd.DataFrame(rows)
    tables = sorted(set(table.columns) - {"run", "seconds", "status"}, key=_table_order)
    extra = [c for c in ("seconds", "status") if c in table.columns]
    table = table[["run", *extra, *tables]].fillna("-")  # "-": no such table in the run
    ok = not details and all(r.get("status", "") == "" for r in rows)
    now = environment()
    versions = [
        f"{key}: recorded {reference['recorded'].get(key)}, now {now[key]}"
        for key in ("python", "torch", "numpy", "pandas", "pyarrow", "flwr", "machine")
        if reference["recorded"].get(key) != now[key]
    ]
    lines = [
        "# Refactor identity check\n",
        f"Reference: commit `{reference['recorded']['commit']}`; now: commit `{now['commit']}`"
        + (
            f" with uncommitted changes in {len(now['uncommitted_changes'])} files"
            if now["uncommitted_changes"]
            else ""
        )
        + ".\n",
        f"Result: **{'all same' if ok else 'DIFFERENT'}** (wall-clock columns aside).\n",
        _markdown(table),
    ]
    if versions:
        lines.append("Library or machine differs from the record (bit identity may not hold):\n")
        lines += [f"- {v}" for v in versions] + [""]
    if details:
        lines.append("## Differences\n")
        lines += [f"- {d}" for d in details] + [""]
    (out / REPORT).write_text("\n".join(lines))
    print(table.to_string(index=False))
    for line in versions + details:
        print(line)
    print("all same" if ok else "DIFFERENT", f"(report: {out / REPORT})")
    return ok


def _table_order(name: str) -> tuple[int, str]:
    order = ["rounds", "clients", "comm", "masks", MODEL, SERVER_MASKS]
    return (order.index(name) if name in order else len(order), name)


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--record", action="store_true", help="write the reference")
    mode.add_argument("--check", action="store_true", help="compare with it (the default)")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the reference")
    args = parser.parse_args(argv)
    if args.record and args.runs != list(RUNS):
        parser.error("--record records every run (a partial reference would not check the rest)")
    torch.set_num_threads(1)  # the server's global evaluation runs in this process too
    print(f"code under test: {code_root()}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedticket-identity-") as work:
        outcomes = run_all(args.runs, Path(work))
        if args.record:
            record(outcomes, args.out)
            return 0
        return 0 if check(outcomes, args.out) else 1


if __name__ == "__main__":
    sys.exit(main())
