"""The index of an output root: every run, named by what it is rather than by its hash.

Usage::

    fedticket runs                       # ~/fedticket-runs (or $FEDTICKET_OUTPUT_ROOT)
    python -m fedticket.analysis.runs_index /path/to/output-root

One line per run directory (``<root>/<algorithm>/<hash>/config.json``), newest first: the
algorithm and hash, ``*`` on its algorithm's ``latest``, its status and rounds done, the last
served accuracy, when it started, and the settings it changes from the defaults. A directory
that is not a run, or a run still being written, is listed with what can be read of it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from fedticket.config import describe_keys
from fedticket.store.results import LATEST, STATUS_FILE, read_table, resolve_output_root

#: settings that say where or how a run was kept, or are a column of their own
_KEPT = {"algorithm", "output-root", "resume", "tracking"}


def _changed(config: dict[str, Any]) -> str:
    defaults = {key: default for key, default, _help in describe_keys()}
    changed = {k: v for k, v in config.items() if k in defaults and defaults[k] != v}
    return " ".join(f"{k}={v}" for k, v in sorted(changed.items()) if k not in _KEPT)


def _last_served(path: Path) -> float:
    try:
        rounds = read_table(path / "rounds.parquet", columns=["served_accuracy"])
    except (OSError, ValueError, KeyError):
        return math.nan
    evaluated = rounds["served_accuracy"].dropna()
    return float(evaluated.iloc[-1]) if len(evaluated) else math.nan


def run_entry(path: Path, latest: bool) -> dict[str, Any]:
    """What one run directory says about itself (fields it cannot read are empty)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    try:
        status = json.loads((path / STATUS_FILE).read_text())
    except (OSError, ValueError):
        status = {}
    started = (path / "config.json").stat().st_mtime if (path / "config.json").exists() else 0
    return {
        "algorithm": path.parent.name,
        "run": path.name + (" *" if latest else ""),
        "status": status.get("status", "?"),
        "rounds": f"{status.get('rounds', '?')}/{config.get('num-rounds', '?')}",
        "served": _last_served(path),
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if started else "",
        "changes": _changed(config) if isinstance(config, dict) else "",
        "_started": started,
    }


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run directory under ``root``, newest first."""
    entries = []
    for algorithm in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        link = algorithm / LATEST
        latest = link.resolve() if link.is_symlink() else None
        for path in sorted(algorithm.iterdir()):
            if path.is_symlink() or not path.is_dir() or not (path / "config.json").exists():
                continue
            entries.append(run_entry(path, path.resolve() == latest))
    return sorted(entries, key=lambda e: -e["_started"])


def format_runs(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no runs"
    columns = ["algorithm", "run", "status", "rounds", "served", "started", "changes"]
    rows = [
        [
            (f"{e[c]:.4f}" if not math.isnan(e[c]) else "-") if c == "served" else str(e[c])
            for c in columns
        ]
        for e in entries
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="List the runs under an output root.")
    parser.add_argument("root", nargs="?", default="", help="output root (default: as for runs)")
    args = parser.parse_args(argv)
    root = resolve_output_root(args.root)
    print(f"runs under {root} (* = the algorithm's latest)")
    print(format_runs(list_runs(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
