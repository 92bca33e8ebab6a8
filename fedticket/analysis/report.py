"""One-screen summary of a run directory, for people without a notebook.

Usage::

    python -m fedticket.analysis.report ~/fedticket-runs/lotteryfl/59c2a2fbf37d
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedticket.analysis.summaries import LAST_K, run_summary
from fedticket.config import describe_keys
from fedticket.learn.eval_protocols import PROTOCOLS
from fedticket.store.results import load_run


class ReportError(ValueError):
    """The path is not a complete run directory."""


def _mb(n: float) -> str:
    return f"{n / 1e6:.3f} MB"


def privacy_lines(rounds: Any, status: Mapping[str, Any]) -> list[str]:
    """The privacy spent (Fed-LTP's columns) and why a run stopped early, where a run has them."""
    lines = []
    if "privacy_epsilon" in rounds and len(rounds):
        last = rounds.iloc[-1]
        lines.append(
            f"privacy    epsilon {last['privacy_epsilon']:.3f} at delta {last['privacy_delta']:g}"
            f" (RDP over every noisy step, largest client; the paper's Theorem 1: "
            f"{last['privacy_epsilon_theorem1']:.3f}); rho {last['privacy_rho']:.4f}; "
            f"validated round {int(last['validated_round'])}"
        )
    if status.get("reason") and status.get("status") == "completed":
        lines.append(f"stopped    {status['reason']}")
    return lines


def summary(run: Mapping[str, Any], path: Path) -> str:
    """The text ``main`` prints: config that differs from the defaults, the last evaluated
    round, byte totals per direction and the ratio to a dense exchange of the same tensors."""
    config, rounds, clients, comm = run["config"], run["rounds"], run["clients"], run["comm"]
    defaults = {key: default for key, default, _help in describe_keys()}
    changed = {k: v for k, v in config.items() if defaults.get(k) != v and k != "output-root"}
    lines = [
        f"run        {path}",
        f"algorithm  {config['algorithm']} | dataset {config['dataset']} | model {config['model']}"
        f" | rounds {len(rounds)}/{config['num-rounds']} | seed {config['seed']}",
        "changed    " + (" ".join(f"{k}={v!r}" for k, v in sorted(changed.items())) or "nothing"),
    ]
    evaluated = rounds.dropna(subset=["served_accuracy"])
    if len(evaluated):
        last, summary_k = evaluated.iloc[-1], run_summary(rounds)
        lines.append(f"round {int(last['round'])}  accuracy per protocol (mean over clients):")
        for protocol, meaning in PROTOCOLS.items():
            spread = last.get(f"{protocol}_accuracy_std", math.nan)
            where = "server-side" if protocol == "global" else f"std over clients {spread:.4f}"
            lines.append(
                f"  {protocol:<9} {last[f'{protocol}_accuracy']:.4f} "
                f"(last {LAST_K} evaluations {summary_k[f'{protocol}_last{LAST_K}']:.4f}, "
                f"{where}): {meaning}"
            )
    density = rounds["mean_density"].dropna()
    if len(density):
        lines.append(f"density    {density.iloc[-1]:.4f} (mean of the last round's trained masks)")
    lines += privacy_lines(rounds, run.get("status") or {})
    for direction in ("down", "up"):
        part = comm[comm["direction"] == direction]
        message, payload = part["message_bytes"].sum(), part["payload_bytes"].sum()
        dense, positions = part["dense_bytes"].sum(), part["position_bytes"].sum()
        ratio = dense / payload if payload else math.nan
        lines.append(
            f"{direction:<10} messages {_mb(message)} | payload {_mb(payload)} "
            f"(positions {_mb(positions)}) | dense fp32 {_mb(dense)} | {ratio:.2f} x below dense"
        )
    total = comm["message_bytes"].sum()
    dense_total = comm["dense_bytes"].sum()
    lines.append(
        f"total      {_mb(total)} in {len(comm)} messages; dense tensors would be "
        f"{_mb(dense_total)} ({dense_total / max(total, 1):.2f} x)"
    )
    failed = clients[clients["status"] != "ok"]
    if len(failed):
        counts = failed.groupby("status").size().to_dict()
        lines.append("failures   " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    else:
        lines.append("failures   none")
    lines.append(f"wall       {rounds['seconds'].sum():.1f} s in rounds")
    environment = run.get("environment") or {}
    if environment:
        packages = environment.get("packages", {})
        lines.append(
            f"machine    {environment.get('cpu', '?')}, {environment.get('cores', '?')} cores | "
            + " ".join(f"{name} {packages.get(name, '?')}" for name in ("flwr", "torch"))
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Summarise a fedticket run directory.")
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    path = args.run_dir.expanduser().resolve()
    missing = [
        f
        for f in ("config.json", "rounds.parquet", "clients.parquet", "comm.parquet")
        if not (path / f).exists()
    ]
    if missing:
        print(
            f"fedticket report: {path} is not a run directory (missing {', '.join(missing)}); "
            "pass <output-root>/<algorithm>/<hash>, as printed at the end of a run",
            file=sys.stderr,
        )
        return 2
    print(summary(load_run(path), path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
